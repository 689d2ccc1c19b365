"""Diagnostics behind the README's Fashion-MNIST paragraph: how far do other ways of refining the
initial codes get, next to PGH? Each prints mAP@all (and mAP@1000) on the protocol split.

  python benchmarks/diag_pgh_ceilings.py smooth --dataset fashion_mnist --train-size 10000
      no network: the ITQ codes of --features on the training set, each replaced --iterations times by
      the bitwise majority of its --k nearest training images' codes (Euclidean, in feature space,
      itself included); queries and database items take the majority code of their 10 nearest
      training images. How good the codes get refined along the features' own neighbourhoods.
      With --mutual, a code votes with only those of its --k neighbours that count it among theirs;
      with --released K2, with BGAN's wider neighbourhood E(i) instead (the --k cosine nearest
      neighbours of the K2 images sharing most of them: PGH's neighbourhood term, K1 = 20, K2 = 30).
  python benchmarks/diag_pgh_ceilings.py exact --dataset fashion_mnist --train-size 10000
      no codes: the database ranked by Euclidean distance in --features itself (mAP@all only).
  python benchmarks/diag_pgh_ceilings.py embed --dataset fashion_mnist --train-size 10000
      manifold hashing: a Laplacian eigenmap (--dims) of the training images' --k-nearest-neighbour
      graph in --features, hashed by ITQ (--dims ≥ --bits) or LSH; queries and database items take
      the majority code of their 10 nearest training images.
  python benchmarks/diag_pgh_ceilings.py contrastive --dataset fashion_mnist --train-size 10000
      a fresh H (PGH's size) trained with a SimCLR-style NT-Xent loss alone between two jittered views
      of each training image (shift, rotation, scale, mirror, contrast; no codes, no GAN).
  python benchmarks/diag_pgh_ceilings.py rehash --run logs/bench/pgh/fashion_mnist_gist_32_anchor8
      a finished PGH run: its H's codes next to ITQ fitted, on the same training images, on H's hidden
      layer and on D's (unconditional) features.
  python benchmarks/diag_pgh_ceilings.py neighbors --dataset fashion_mnist --train-size 10000 --features gist
  python benchmarks/diag_pgh_ceilings.py neighbors --run logs/bench/pgh/fashion_mnist_gist_32_vote50_anchor
      how often a training image's k nearest training images (Euclidean, k = 1, 10, 20, 50) share its
      label: in --features, or, with --run, in the hidden layer of that PGH run's H, and how often the
      mutual pairs among the 20 do. What the vote and the triplet can build on, and whether H learnt
      neighbourhoods purer than its initial features. --override features.number_blocks=8 (say)
      measures a variant of the features.

Labels are used only to score, never to train. Prints; writes nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).parent))
from common import add_protocol_arguments, compose_protocol, protocol_features

from pgh.data import Split
from pgh.hashing import HASHERS
from pgh.hashing.vote import majority_vote, nearest_neighbors, own_neighbors
from pgh.methods import PGH
from pgh.methods.base import to_network_input
from pgh.methods.bgan_similarity import knn_indices, released_lists
from pgh.nets import HashNet
from pgh.nets.augment import random_affine, random_contrast
from pgh.retrieval import evaluate_codes
from pgh.retrieval.run_encoder import RunEncoder


def nt_xent(h_a: torch.Tensor, h_b: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent on centred bit probabilities 2h − 1: row i of h_a and of h_b are the positive pair."""
    z = F.normalize(torch.cat([h_a, h_b]) * 2 - 1, dim=1)
    n = h_a.shape[0]
    similarity = (z @ z.T / temperature).fill_diagonal_(float("-inf"))
    return F.cross_entropy(similarity, torch.cat([torch.arange(n, 2 * n), torch.arange(n)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["smooth", "exact", "embed", "contrastive", "rehash", "neighbors"])
    add_protocol_arguments(parser, dataset="fashion_mnist")
    parser.add_argument("--k", type=int, default=20, help="smooth: neighbours voting on a training code; embed: graph")
    parser.add_argument("--dims", type=int, default=32, help="embed: dimensions of the Laplacian eigenmap")
    parser.add_argument("--iterations", type=int, default=10, help="smooth: rounds of voting")
    parser.add_argument("--mutual", action="store_true", help="smooth: vote with mutual nearest neighbours only")
    parser.add_argument("--released", type=int, metavar="K2", help="smooth: vote over BGAN's E(i) (K1 = --k)")
    parser.add_argument("--epochs", type=int, default=40, help="contrastive: epochs")
    parser.add_argument("--temperature", type=float, default=1.0, help="contrastive: NT-Xent temperature")
    parser.add_argument("--run", help="rehash, neighbors: a finished PGH run directory")
    args = parser.parse_args()
    if args.mode == "rehash" and not args.run:
        parser.error("rehash needs --run RUN_DIR (a finished PGH run)")
    if args.mutual and args.released is not None:
        parser.error("--mutual and --released are two different neighbourhoods: choose one")
    torch.manual_seed(0)

    if args.run is not None and args.mode in ("rehash", "neighbors"):
        run = Path(args.run)
        model = load_pgh(run)
        cfg = OmegaConf.load(run / "config.yaml")
        dataset, split = instantiate(cfg.dataset), Split.load(run / "split.npz")
    else:
        cfg, dataset, split = compose_protocol(args)
    labels = dataset.labels

    def score(what: str, query_codes: torch.Tensor, db_codes: torch.Tensor) -> None:
        m = evaluate_codes(query_codes, labels[split.query], db_codes, labels[split.database]).metrics
        print(f"{what}: mAP@all {100 * m['map_all']:.2f}, mAP@1000 {100 * m['map_at_1000']:.2f}", flush=True)

    if args.mode == "smooth":
        features = protocol_features(cfg, dataset).float()
        train = features[split.train]
        itq = HASHERS["itq"](bits=args.bits, seed=0).fit(train)
        codes = itq.encode(train)
        outside = [nearest_neighbors(features[part], train, 10) for part in (split.query, split.database)]
        score("ITQ", itq.encode(features[split.query]), itq.encode(features[split.database]))
        score("ITQ, by the 10 nearest training codes", *(majority_vote(codes, n) for n in outside))
        if args.released is None:
            voters = own_neighbors(train, args.k)
            weights = mutual_mask(voters) if args.mutual else torch.ones_like(voters, dtype=torch.bool)
        else:  # E(i), padded with -1, and i itself (E(i) holds it: i is among its own K1 list's images)
            lists = released_lists(knn_indices(train, args.k), args.released)
            voters = torch.cat([torch.arange(len(train))[:, None], lists], 1)
            weights = voters >= 0
            weights[:, 1:] &= lists != torch.arange(len(train))[:, None]
            voters = voters.clamp(min=0)
            print(f"E(i) holds {weights.sum(1).float().mean() - 1:.1f} other training images on average", flush=True)
        for iteration in range(1, args.iterations + 1):
            # the weighted majority over the voters (a tie gives 1)
            codes = (codes[voters].float() * weights[..., None]).sum(1) / weights.sum(1, keepdim=True) >= 0.5
            if iteration in (1, 3) or iteration == args.iterations:
                over = f"{args.k} {'mutual ' if args.mutual else ''}neighbours"
                if args.released is not None:
                    over = f"E(i) (K1 {args.k}, K2 {args.released})"
                what = f"smoothed {iteration}x over {over} ({len(torch.unique(codes, dim=0))} distinct)"
                score(what, *(majority_vote(codes, n) for n in outside))

    elif args.mode == "exact":
        features = protocol_features(cfg, dataset).float()
        database, database_labels = features[split.database], labels[split.database]
        precisions = []
        for queries, query_labels in zip(features[split.query].split(100), labels[split.query].split(100)):
            order = torch.cdist(queries, database).argsort(dim=1, stable=True)
            relevant = (database_labels[order] == query_labels[:, None]).float()
            ranks = torch.arange(1, database.shape[0] + 1)
            precisions.append((relevant.cumsum(1) / ranks * relevant).sum(1) / relevant.sum(1))
        print(f"Euclidean ranking in {args.features}: mAP@all {100 * torch.cat(precisions).mean():.2f}")

    elif args.mode == "embed":
        from sklearn.manifold import SpectralEmbedding

        features = protocol_features(cfg, dataset).float()
        train = features[split.train]
        outside = [nearest_neighbors(features[part], train, 10) for part in (split.query, split.database)]
        eigenmap = SpectralEmbedding(args.dims, affinity="nearest_neighbors", n_neighbors=args.k, random_state=0)
        embedded = torch.from_numpy(eigenmap.fit_transform(train.numpy())).float()
        if args.dims >= args.bits:
            codes = HASHERS["itq"](bits=args.bits, seed=0).fit(embedded).encode(embedded)
            score(f"ITQ on a {args.dims}-d eigenmap ({args.k}-NN graph)", *(majority_vote(codes, n) for n in outside))
        codes = HASHERS["lsh"](bits=args.bits, seed=0).fit(embedded).encode(embedded)
        score(f"LSH on a {args.dims}-d eigenmap ({args.k}-NN graph)", *(majority_vote(codes, n) for n in outside))

    elif args.mode == "contrastive":
        images = {s: to_network_input(dataset.images[getattr(split, s)], 28, 1) for s in ("train", "query", "database")}
        h = HashNet(args.bits, channels=1, image_size=28, width=32, hidden=256)
        optimizer = torch.optim.Adam(h.parameters(), lr=1e-3)

        def view(x: torch.Tensor) -> torch.Tensor:
            return random_contrast(random_affine(x, 3.0, 15.0, 0.2, True), 0.4)

        for epoch in range(1, args.epochs + 1):
            for i in torch.randperm(images["train"].shape[0]).split(256):
                if len(i) < 2:
                    continue
                x = images["train"][i]
                h_a, h_b = h(torch.cat([view(x), view(x)])).split(len(i))
                loss = nt_xent(h_a, h_b, args.temperature)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            if epoch % 5 == 0 or epoch == args.epochs:
                what = f"epoch {epoch} (loss {loss.item():.3f})"
                score(what, h.encode(images["query"]), h.encode(images["database"]))

    elif args.mode == "rehash":
        parts = {s: pgh_layers(model, dataset.images[getattr(split, s)]) for s in ("train", "query", "database")}
        score("sign of H (PGH's codes)", model.encode_inputs(dataset.images[split.query]),
              model.encode_inputs(dataset.images[split.database]))  # fmt: skip
        for which, name in enumerate(("H's hidden layer", "D's features")):
            itq = HASHERS["itq"](bits=model.hparams.bits, seed=0).fit(parts["train"][which])
            score(f"ITQ on {name}", *(itq.encode(parts[s][which]) for s in ("query", "database")))

    else:  # neighbors
        if args.run is not None:
            space, train = f"the hidden layer of {args.run}'s H", pgh_layers(model, dataset.images[split.train])[0]
        else:
            space, train = args.features, protocol_features(cfg, dataset).float()[split.train]
        train_labels = labels[split.train]
        others = nearest_others(train, min(max(NEIGHBOR_COUNTS), train.shape[0] - 1))
        agreement = label_agreement(others, train_labels, NEIGHBOR_COUNTS)
        shown = ", ".join(f"k = {k}: {100 * a:.2f}" for k, a in agreement.items())
        print(f"nearest training images sharing the label in {space} (%): {shown}")
        mutual = mutual_mask(others[:, :20])
        same = train_labels[others[:, :20]] == train_labels[:, None]
        print(
            f"mutual pairs among the 20 nearest: {mutual.sum(1).float().mean():.1f} an image, "
            f"{100 * same[mutual].float().mean():.2f} % sharing the label"
        )


NEIGHBOR_COUNTS = (1, 10, 20, 50)


def load_pgh(run: Path) -> PGH:
    """The model a finished PGH run was evaluated on, in eval mode on the CPU, chosen as `pgh-index`
    chooses it (RunEncoder: checkpoints/last.ckpt, or stopped.ckpt for a run stopped in mid-epoch)."""
    try:
        model = getattr(RunEncoder(run, device="cpu"), "model", None) if (run / "split.npz").exists() else None
    except (FileNotFoundError, ValueError) as error:  # not a finished run, its checkpoint missing or unreadable
        raise SystemExit(str(error)) from None
    if not isinstance(model, PGH):
        raise SystemExit(f"{run} is not a finished PGH run (a PGH checkpoint and split.npz); give one to --run")
    return model


@torch.no_grad()
def pgh_layers(model: PGH, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the coding network's hidden layer, D's features) of `images`, in eval mode; the coding
    network is H, or its weight average where the run kept one (`PGH.coder`)."""
    hidden, critic = [], []
    for chunk in images.split(1000):
        x = model.prepare(chunk)
        hidden.append(model.coder.head[:-1](model.coder.convs(x)))  # up to its last linear layer
        critic.append(model.D.features(x))
    return torch.cat(hidden), torch.cat(critic)


def mutual_mask(neighbors: torch.Tensor) -> torch.Tensor:
    """bool [n, k]: whether neighbors[i, t] counts i among its own neighbours (row j of `neighbors`:
    the k nearest of point j, itself included or not)."""
    own = torch.arange(neighbors.shape[0])[:, None, None]
    return (neighbors[neighbors] == own).any(dim=2)


def nearest_others(points: torch.Tensor, k: int) -> torch.Tensor:
    """Indices [n, k] of each point's k nearest other points (Euclidean), nearest first."""
    neighbors = nearest_neighbors(points, points, k + 1)
    # drop each point itself (first, unless an exact duplicate came first), keeping the order
    others = (neighbors != torch.arange(points.shape[0])[:, None]).float()
    return neighbors.gather(1, others.argsort(dim=1, descending=True, stable=True)[:, :k])


def label_agreement(others: torch.Tensor, labels: torch.Tensor, counts: tuple[int, ...]) -> dict[int, float]:
    """k -> the fraction of each point's k nearest other points (`nearest_others`) that share its label,
    for the counts up to their width."""
    same = (labels[others] == labels[:, None]).float()
    return {k: float(same[:, :k].mean()) for k in counts if k <= others.shape[1]}


if __name__ == "__main__":
    main()
