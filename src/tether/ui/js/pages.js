// A thread list a page at a time (GET v1/threads with its `cursor`): the live list, or the results
// of a search. Loading more is asked for as the list is scrolled; a page is fetched once.

export class Pages {
  /** @param {(cursor: string|null) => Promise<{threads: object[], next_cursor: string|null}>} fetchPage */
  constructor(fetchPage) {
    this.fetchPage = fetchPage;
    this.cursor = null;
    this.done = false; // the last page has been loaded
    this.loading = null; // the page being fetched: asked for again meanwhile, it is not fetched twice
  }

  /** The next page's threads; [] once there are no more, or while a page is already on its way. */
  async next() {
    if (this.done || this.loading) return [];
    this.loading = this.fetchPage(this.cursor);
    try {
      const { threads, next_cursor: cursor } = await this.loading;
      this.cursor = cursor;
      this.done = !cursor;
      return threads;
    } finally {
      this.loading = null;
    }
  }
}
