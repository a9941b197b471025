"""Layers: the protocol (base.py), the registry, and the layers themselves,
one file each. Everything public is re-exported here."""
from .base import Layer, Param, ROLES
from .registry import LAYERS, register_layer, layer_config, layer_from_config, param_specs_of
from .activations import (ReLU, LeakyReLU, Sigmoid, Tanh, GELU, Softmax, ACTIVATION_LAYERS,
                          RELU_FAMILY)
from .dense import Dense
from .dropout import Dropout
from .flatten import Flatten
from .conv import Conv2d
from .pooling import MaxPool2d, AvgPool2d, GlobalAvgPool2d
from .norm import BatchNorm1d, BatchNorm2d
from .residual import Residual
from .sequential import Sequential, fused_activations, gemm_chain

__all__ = ["Layer", "Param", "ROLES", "LAYERS", "register_layer", "layer_config",
           "layer_from_config", "param_specs_of", "ReLU", "LeakyReLU", "Sigmoid", "Tanh",
           "GELU", "Softmax", "ACTIVATION_LAYERS", "RELU_FAMILY", "Dense", "Dropout", "Flatten",
           "Conv2d", "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d", "BatchNorm1d", "BatchNorm2d",
           "Residual",
           "Sequential", "fused_activations", "gemm_chain"]
