"""The npm clients Tether speaks its protocols with, and pytest helpers that run them."""
