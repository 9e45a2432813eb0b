"""Training: SRResNet pretraining and SRGAN adversarial fine-tuning."""
