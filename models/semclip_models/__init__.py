"""Python pipeline of the SemCLIP link: data, the tiny-lit dual encoder, bundle export.

Modules:
- `data`: CIFAR-10 loading, the base/new class split, augmentation and preprocessing.
- `text_tower`: the frozen all-MiniLM-L6-v2 text encoder that takes token embeddings.
- `tiny_lit`: the small CNN image tower trained here to align with the text tower.
- `export`: ONNX export of the towers, checked against torch with ONNX Runtime.
- `bundle`: reading and writing bundle manifests (docs/bundle.md).
- `fixture`: a small random-init bundle plus Python reference outputs for Rust tests.
"""
