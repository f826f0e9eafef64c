"""UniMP processing: the unified data format, the processor and its templates.

Importing this package registers `UniMPProcessor` with `AutoProcessor` for `UniMPConfig`.
"""

from transformers import AutoProcessor

from modeling_unimp import UniMPConfig

from .catalogue_unimp import ItemCatalogue
from .image_processing_unimp import load_rgb_image, make_image_processor
from .processing_unimp import UniMPProcessor
from .schema_unimp import INTERACTION_FEATURES, ITEM_FEATURES, TASKS, interactions_dataset, items_dataset
from .tokenization_unimp import train_tokenizer
from .vocabulary_unimp import shuffled_item_ids

AutoProcessor.register(UniMPConfig, UniMPProcessor, exist_ok=True)

__all__ = [
    "INTERACTION_FEATURES",
    "ITEM_FEATURES",
    "TASKS",
    "ItemCatalogue",
    "UniMPProcessor",
    "interactions_dataset",
    "items_dataset",
    "load_rgb_image",
    "make_image_processor",
    "shuffled_item_ids",
    "train_tokenizer",
]
