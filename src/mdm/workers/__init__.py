"""Background processes of MDM (layer 4): the recall worker and what it shares with the SE.

- ``recall``: claims staging requests from the catalog queue, retrieves from the PACS,
  anonymizes, encrypts into the cache, registers keys and marks files ONLINE;
- ``batch``: one claimed batch: resolve, retrieve from the PACS, process; its outcomes;
- ``header``: the de-identified header for the metadata catalog (with its per-series memo);
- ``part10``: the anonymized instance as deterministic Part 10 bytes (MDM's own file meta);
- ``instance``: one instance from the PACS's bytes to an encrypted file in the cache;
- ``recipe``: how a re-recall gives back the very same ciphertext (docs/recall.md);
- ``registrar``: ``mdm register``, a PACS walk into NEARLINE catalog entries;
- ``cache``: the catalog-backed disk cache layout, pins and eviction (used by the SE too).
"""
