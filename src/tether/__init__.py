"""Tether: a self-hosted server for AI-agent chats whose runs never break."""

__version__ = "0.1.0"
