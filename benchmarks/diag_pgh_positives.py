"""PGH diagnostics behind the README's "Why the warm-up matters": how good can H get from PGH's
triplet + quantisation losses when the positives are good, and how good are G's positives?

  python benchmarks/diag_pgh_positives.py neighbours --dataset mnist5k --bits 32
      "ideal G": the positive of x_i is a random one of its --k nearest training images in the
      ITQ Hamming space of --features, the negative a random training image; a fresh H is trained
      and mAP@all printed every 5 epochs.
  python benchmarks/diag_pgh_positives.py generator --ckpt RUN/checkpoints/last.ckpt
      positives and negatives from that run's G (frozen) for its current codes; also prints G's
      label fidelity: how often the nearest real training image (pixels) of G(z | b_i) has x_i's label.
  python benchmarks/diag_pgh_positives.py codes --dataset fashion_mnist --train-size 10000
      no triplet: a fresh H only learns to reproduce the ITQ codes of --features (the distillation
      warm-up alone): how much of the initial codes' mAP a pixel CNN of this size can carry.
--width / --hidden size H (PGH's defaults 32 / 256); --augment-shift / --augment-degrees jitter its
training inputs as PGH's `augment_*` do (default 0: off).

Labels are used only to score, never to train. Prints; writes nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import add_protocol_arguments, compose_protocol, protocol_features

from pgh.hashing import HASHERS
from pgh.methods import PGH
from pgh.methods.base import to_network_input
from pgh.methods.pgh_losses import code_target_loss, negative_codes, quantization_loss, triplet_loss
from pgh.nets import HashNet
from pgh.nets.augment import random_affine
from pgh.retrieval import evaluate_codes, pack_codes
from pgh.retrieval.hamming import hamming_matrix


def hamming_neighbours(codes: torch.Tensor, k: int) -> torch.Tensor:
    """Indices [n, k] of each code's k nearest other codes in Hamming distance."""
    packed = pack_codes(codes)
    distance = torch.from_numpy(hamming_matrix(packed, packed).astype(np.float32))
    distance.fill_diagonal_(float("inf"))
    return distance.argsort(1)[:, :k]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("positives", choices=["neighbours", "generator", "codes"])
    add_protocol_arguments(parser, dataset="mnist5k")
    parser.add_argument("--k", type=int, default=10, help="neighbours to draw the positive from")
    parser.add_argument("--ckpt", help="a PGH checkpoint (positives=generator)")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--gamma", type=float, default=0.5)
    parser.add_argument("--quantization-weight", type=float, default=0.1)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--augment-shift", type=float, default=0.0)
    parser.add_argument("--augment-degrees", type=float, default=0.0)
    args = parser.parse_args()
    if args.positives == "generator" and not args.ckpt:
        parser.error("positives=generator needs --ckpt RUN/checkpoints/last.ckpt")

    torch.manual_seed(0)
    cfg, dataset, split = compose_protocol(args)
    labels, train_labels = dataset.labels, dataset.labels[split.train]
    images = {name: to_network_input(dataset.images[getattr(split, name)], 28, 1) for name in ("train", "query")}
    images["database"] = to_network_input(dataset.images[split.database], 28, 1)
    x, n = images["train"], images["train"].shape[0]

    def map_all(query_codes: torch.Tensor, db_codes: torch.Tensor) -> float:
        result = evaluate_codes(query_codes, labels[split.query], db_codes, labels[split.database])
        return 100 * result.metrics["map_all"]

    if args.positives in ("neighbours", "codes"):
        features = protocol_features(cfg, dataset)
        itq = HASHERS["itq"](bits=args.bits, seed=0).fit(features[split.train])
        codes = itq.encode(features[split.train])
        initial = map_all(itq.encode(features[split.query]), itq.encode(features[split.database]))
        print(f"initial ITQ codes: mAP@all {initial:.2f}")
        neighbours = hamming_neighbours(codes, args.k)
        print(f"neighbour label precision {(train_labels[neighbours] == train_labels[:, None]).float().mean():.3f}")

        def triplet_images(i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            positive = neighbours[i, torch.randint(args.k, (len(i),))]
            return x[positive], x[torch.randint(n, (len(i),))]
    else:
        model = PGH.load_from_checkpoint(args.ckpt, map_location="cpu", weights_only=False)
        if model.codes.shape[0] != n:
            raise SystemExit(f"{args.ckpt} holds {model.codes.shape[0]} codes; this split trains on {n} images")
        generator, codes, z_dim = model.G.requires_grad_(False), model.codes, model.hparams.z_dim
        fakes = model.generate(codes, seed=1).flatten(1)  # eval mode
        generator.train()  # triplets with batch statistics, as in training
        nearest = torch.cdist(fakes, x.flatten(1)).argmin(1)
        print(f"G label fidelity {(train_labels[nearest] == train_labels).float().mean():.3f}")

        def triplet_images(i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            with torch.no_grad():
                same = generator(torch.randn(len(i), z_dim), codes[i])
                other = i[negative_codes(codes[i], "random")]  # a derangement, as in PGH
                return same, generator(torch.randn(len(i), z_dim), codes[other])

    h = HashNet(args.bits, channels=1, image_size=28, width=args.width, hidden=args.hidden)
    optimizer = torch.optim.Adam(h.parameters(), lr=2e-4, betas=(0.5, 0.999))
    for epoch in range(args.epochs):
        for i in torch.randperm(n).split(64):
            if args.positives == "codes":
                h_real = h(random_affine(x[i], args.augment_shift, args.augment_degrees))
                loss = code_target_loss([(h_real, codes[i].float())])
            else:
                positive, negative = triplet_images(i)
                h_input = random_affine(torch.cat([x[i], positive, negative]), args.augment_shift, args.augment_degrees)
                h_real, h_same, h_other = h(h_input).split(len(i))
                loss = triplet_loss(h_real, h_same, h_other, args.gamma)
                loss = loss + args.quantization_weight * quantization_loss(h_real, h_same, h_other)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if epoch % 5 == 4 or epoch == args.epochs - 1:
            score = map_all(h.encode(images["query"]), h.encode(images["database"]))
            print(f"epoch {epoch + 1}: mAP@all {score:.2f}", flush=True)


if __name__ == "__main__":
    main()
