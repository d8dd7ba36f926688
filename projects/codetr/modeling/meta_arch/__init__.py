"""Meta-architectures, registered in detectron2's META_ARCH_REGISTRY."""
from .adamixer import AdaMixer, DEQDet, RNNDet
from .atss import ATSS
from .co_detr import CoDETR
from .conditional_detr import ConditionalDETR
from .detr import DETR
from .dino import DINO
from .one_stage import OneStageDetector
from .query_detector import QueryDetector
from .tood import TOOD

__all__ = [
    "ATSS", "AdaMixer", "CoDETR", "ConditionalDETR", "DEQDet", "DETR", "DINO", "OneStageDetector", "QueryDetector",
    "RNNDet", "TOOD",
]
