"""DINO-R50 5-scale, 12 epochs on COCO (detrex dino_r50_5scale_12ep: 49.6 AP): res2..res5 plus one
extra stride-64 level (strides 4..64), otherwise as dino_r50_4scale_12ep."""
from .dino_r50_4scale_12ep import dataloader, lr_multiplier, optimizer, train
from .models.dino_r50_5scale import model

train.output_dir = "./output/dino_r50_5scale_12ep"
