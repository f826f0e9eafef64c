"""Run under `accelerate launch --num_processes 2`: rank test users on 2 processes and on one, write both."""

import json
import sys

import torch
from accelerate import Accelerator

from processing_unimp.data.builders import load_unimp_dataset
from processing_unimp.evaluation.tasks import evaluate_ranking
from processing_unimp.processing_unimp import UniMPProcessor
from processing_unimp.training.initialisation import unimp_for_processor

accelerator = Accelerator(cpu=True)
data = load_unimp_dataset("fashion-shop")
samples = [s for s in data["tasks_test"].select(range(200)) if s["task"] == "recommend"][:15]
processor = UniMPProcessor.from_catalogue(data["items"], image_size=16, vocab_size=600, max_history_items=4)
torch.manual_seed(0)
model = unimp_for_processor("tiny", processor)
gathered = evaluate_ranking(model, processor, samples, batch_size=4, accelerator=accelerator)
if accelerator.is_main_process:
    single = evaluate_ranking(model, processor, samples, batch_size=4)
    with open(sys.argv[1], "w") as handle:
        json.dump({"processes": accelerator.num_processes, "gathered": gathered, "single": single}, handle)
