"""Synthetic test data for the DanQing pipeline, kept out of the production package `danqing_assets`.

- `crawl`: a deterministic Common-Crawl-shaped sample crawl (WARC files + truth.parquet: what every stage must decide).
- `scenes`: the drawable scenes its images show and the Chinese captions that name them.
- `evalset`: held-out retrieval and zero-shot sets rendered from the same vocabulary.
- `vocab`: the word banks of the generic captions and page text.
"""
