"""Fake inputs for tests, demos and benchmarks, generated deterministically from a seed.

``images`` (photo-like JPEG class folders with optional awkward files: ``recordio-pack fake``) and ``archives``
(a small ILSVRC2012 set in the official tar and devkit layout, its pixels from ``images``:
``recordio-pack imagenet fake-archives``).
"""
