"""PGH's networks: the hash-conditioned DCGAN generator and discriminator, and the hash network."""

from pgh.nets.dcgan import SUPPORTED_IMAGE_SIZES, Discriminator, Generator, dcgan_init
from pgh.nets.hashnet import HashNet

__all__ = ["SUPPORTED_IMAGE_SIZES", "Discriminator", "Generator", "HashNet", "dcgan_init"]
