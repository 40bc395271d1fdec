"""Cross-cutting runtime pieces: device/dtype, CPU allocator, atomic file output, distributed helpers."""
