"""codetr: query-based object detectors (DINO, DN-DETR, Co-DETR, TOOD, ...) as a Detectron2 project."""
__version__ = "0.1.0"
