"""Networks: PGH's hash-conditioned DCGAN generator and discriminator and its hashing network,
DH's tanh MLP, DeepBit's CNN / VGG16 trunk, BGAN's code generator and discriminator."""

from pgh.nets.bgan_nets import CodeGenerator, ImageDiscriminator
from pgh.nets.dcgan import SUPPORTED_IMAGE_SIZES, Discriminator, Generator, dcgan_init
from pgh.nets.deepbit_cnn import DeepBitCNN, DeepBitNet, VGG16FC7Trunk
from pgh.nets.hashnet import HashNet
from pgh.nets.mlp import HashMLP

__all__ = [
    "SUPPORTED_IMAGE_SIZES",
    "CodeGenerator",
    "DeepBitCNN",
    "DeepBitNet",
    "Discriminator",
    "Generator",
    "HashMLP",
    "HashNet",
    "ImageDiscriminator",
    "VGG16FC7Trunk",
    "dcgan_init",
]
