"""Distillation methods: each module is one file of pure loss functions over pytrees."""
