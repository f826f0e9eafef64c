"""UniMP model package: importing it registers UniMP with the transformers Auto classes."""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText

from .configuration_unimp import UNIMP_PRESETS, UniMPConfig
from .modeling_unimp import UniMPForConditionalGeneration, UniMPPreTrainedModel

AutoConfig.register("unimp", UniMPConfig, exist_ok=True)
AutoModel.register(UniMPConfig, UniMPForConditionalGeneration, exist_ok=True)
AutoModelForCausalLM.register(UniMPConfig, UniMPForConditionalGeneration, exist_ok=True)
AutoModelForImageTextToText.register(UniMPConfig, UniMPForConditionalGeneration, exist_ok=True)

__all__ = ["UNIMP_PRESETS", "UniMPConfig", "UniMPForConditionalGeneration", "UniMPPreTrainedModel"]
