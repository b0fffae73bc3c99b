"""ILSVRC2012 (ImageNet-1k) archives: download, devkit labels, safe extraction, prepare, and direct indexing.

One module per stage: ``download`` (resumable, checksummed), ``devkit`` (meta.mat and the validation ground
truth), ``labels`` (label conventions and the class-map files), ``safetar`` (extraction that refuses hostile
members), ``prepare`` (archives -> ``train/<wnid>/``, ``val/<wnid>/``) and ``archive`` (byte ranges of the
images inside the uncompressed tars, so ``pack`` reads them without extracting). A small fake set in the
official layout, for tests and demos, is ``recordio_pack.fakes.archives``.
"""
