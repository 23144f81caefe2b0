"""The bundled demo clip (several people rendered from the body model, with ground truth)."""

from realtime.demo.clip import (
    GENERATOR_VERSION,
    DemoClip,
    default_cache_dir,
    ensure_demo_clip,
    generate_clip,
    projected_boxes,
)

__all__ = [
    "GENERATOR_VERSION",
    "DemoClip",
    "default_cache_dir",
    "ensure_demo_clip",
    "generate_clip",
    "projected_boxes",
]
