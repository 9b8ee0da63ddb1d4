"""The evidence formats on their own: what a copy bundle holds and how each
part is written and read, and `witness-verify`, which checks a bundle.

- `canonical.py`: reading canonical JSON back (the exact bytes that were
  signed) and the one error for evidence that is not well formed;
- `manifest.py`: the signed manifest (`witness-manifest/1`);
- `custody.py`: an audit entry as the API shows it and a bundle's custody
  log carries it, and its hash (`entry_digest`, `GENESIS`);
- `layout.py`: the bundle's folder, file names and `copy.json`;
- `verify.py`: `witness-verify`.

Everything here imports only `crypto`, `cryptography`, `asn1crypto` and the
standard library (import-linter and tests/test_layering.py check it), so
the verifier the other side's expert runs needs none of the server: no
database, no Flask, no POSIX-only module. The domain (`sync.audit`,
`sync.finalize`, `sync.bundle`) writes these formats by importing them from
here; nothing here imports the domain. Keep this file free of imports.
"""
