"""Offline work (PyTorch): export, distillation, Taylor pruning, evaluation. Never imported by the service."""
