"""Models: backbones (open_clip), the demo backbone, projection heads, losses, head training, fine-tuning, embedding."""
