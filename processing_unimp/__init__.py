"""UniMP processing: the unified data format, the processor and its templates.

Importing this package registers `UniMPProcessor` with `AutoProcessor` for `UniMPConfig`, and
`PersonalizationPipeline` as the pipeline task "personalization".
"""

from transformers import AutoModelForImageTextToText, AutoProcessor
from transformers.pipelines import PIPELINE_REGISTRY

from modeling_unimp import UniMPConfig

from .catalogue_unimp import ItemCatalogue
from .image_processing_unimp import load_rgb_image, make_image_processor
from .pipeline_unimp import PersonalizationPipeline
from .processing_unimp import UniMPProcessor
from .schema_unimp import INTERACTION_FEATURES, ITEM_FEATURES, TASKS, interactions_dataset, items_dataset
from .tokenization_unimp import train_tokenizer
from .vocabulary_unimp import shuffled_item_ids

AutoProcessor.register(UniMPConfig, UniMPProcessor, exist_ok=True)
PIPELINE_REGISTRY.register_pipeline(
    "personalization", pipeline_class=PersonalizationPipeline, pt_model=AutoModelForImageTextToText, type="multimodal"
)

__all__ = [
    "INTERACTION_FEATURES",
    "ITEM_FEATURES",
    "TASKS",
    "ItemCatalogue",
    "PersonalizationPipeline",
    "UniMPProcessor",
    "interactions_dataset",
    "items_dataset",
    "load_rgb_image",
    "make_image_processor",
    "shuffled_item_ids",
    "train_tokenizer",
]
