"""`pgh-index`: a folder of images coded by a finished run's model is indexed with exactly the codes
the run gave the same images, and searching it finds them; IVF, a features-reading method (DH) and
shallow hashers (ITQ on GIST, SH on pixels) too; bad inputs stop with a message that names them."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from omegaconf import open_dict
from PIL import Image

from pgh.data import Split, load_digits
from pgh.retrieval import BinaryIndex, pack_codes
from pgh.retrieval.cli import main
from pgh.retrieval.run_encoder import RunEncoder
from pgh.train import train

TINY_PGH = [
    *("dataset=digits", "method=pgh", "features=pixels", "bits=16", "split.query_per_class=20"),
    *("split.train_size=128", "method.batch_size=32", "method.rounds=1", "method.progressive.epochs_per_round=1"),
    *("method.module.width=8", "method.module.hidden=32", "method.module.z_dim=16", "method.module.distill_epochs=1"),
    *("trainer=cpu", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "logger=none"),
]
TINY_DH = [
    *("dataset=digits", "method=dh", "features=pixels", "bits=16", "split.query_per_class=20"),
    *("split.train_size=128", "method.max_epochs=2", "trainer=cpu", "trainer.enable_progress_bar=false"),
    *("trainer.enable_model_summary=false", "logger=none"),
]
SHALLOW = {  # a shallow run codes new images with its saved hasher.pt, on the run's features of them
    "itq": ["dataset=digits", "method=itq", "features=gist", "bits=16", "logger=none"],
    "sh": ["dataset=digits", "method=sh", "features=pixels", "bits=16", "logger=none"],
}
N_IMAGES = 300


def trained_run(make_cfg, tmp_path: Path, name: str, overrides: list[str]) -> Path:
    cfg = make_cfg(*overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / name)
    train(cfg)
    return tmp_path / name


def write_database_images(run: Path, folder: Path) -> list[int]:
    """The run's first N_IMAGES database images as PNGs in three sub-folders; their database positions
    in the order pgh-index will find them (sorted paths)."""
    images = load_digits().images
    database = Split.load(run / "split.npz").database[:N_IMAGES].tolist()
    for position, i in enumerate(database):
        (folder / str(position % 3)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i, 0].numpy()).save(folder / str(position % 3) / f"{position:04d}.png")
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))
    return [int(Path(name).stem) for name in names]


def search_rows(capsys, *args: str) -> list[dict[str, str]]:
    capsys.readouterr()  # what came before: training's and building's closing lines
    main(["search", *args, "--device", "cpu"])
    return list(csv.DictReader(io.StringIO(capsys.readouterr().out)))


@pytest.mark.parametrize("method", ["pgh", "dh", "itq", "sh"])  # H reads the images; DH and the hashers features
def test_index_holds_the_runs_codes_and_search_finds_the_images(method, make_cfg, tmp_path, capsys):
    run = trained_run(make_cfg, tmp_path, method, {"pgh": TINY_PGH, "dh": TINY_DH, **SHALLOW}[method])
    positions = write_database_images(run, tmp_path / "images")

    build = ["build", str(run), str(tmp_path / "images"), "--out", str(tmp_path / "index"), "--device", "cpu"]
    main([*build, "--chunk", "64", "--workers", "2"])  # 5 chunks, read ahead by 2 processes
    info = json.loads((tmp_path / "index" / "index.json").read_text())
    assert (info["count"], info["bits"], info["nlist"]) == (N_IMAGES, 16, None)
    paths = (tmp_path / "index" / "paths.txt").read_text().splitlines()
    assert len(paths) == N_IMAGES and paths == sorted(paths) and paths[0] == "0/0000.png"
    # the codes in the index are the run's own codes of those database images, in paths.txt's order
    run_codes = np.load(run / "database_codes.npy")[positions]
    index = BinaryIndex.load(tmp_path / "index" / "index.faissindex", use_gpu=False)
    distances, _ = index.search(run_codes, 1)
    assert (distances[:, 0] == 0).all() and index.ntotal == N_IMAGES
    coded = pack_codes(RunEncoder(run, device="cpu")([tmp_path / "images" / path for path in paths]))
    np.testing.assert_array_equal(coded, run_codes)  # file by file, the run's own codes
    assert RunEncoder(run, device="cpu")([]).shape == (0, 16)

    # a query that is in the index finds itself at distance 0 (among the images that share its code)
    query = tmp_path / "images" / paths[7]
    rows = search_rows(capsys, str(tmp_path / "index"), str(query), "-k", str(N_IMAGES))
    assert [int(r["rank"]) for r in rows] == list(range(1, N_IMAGES + 1))
    assert {r["path"] for r in rows} == set(paths) and int(rows[0]["hamming_distance"]) == 0
    assert any(r["path"] == paths[7] and r["hamming_distance"] == "0" for r in rows)


def test_ivf_index_and_csv_output(make_cfg, tmp_path, capsys):
    run = trained_run(make_cfg, tmp_path, "pgh", TINY_PGH)
    write_database_images(run, tmp_path / "images")
    build = ["build", str(run), str(tmp_path / "images"), "--device", "cpu"]
    main([*build, "--out", str(tmp_path / "exact")])
    main([*build, "--out", str(tmp_path / "ivf"), "--nlist", "8", "--nprobe", "2"])
    assert json.loads((tmp_path / "ivf" / "index.json").read_text())["nlist"] == 8

    queries = [str(tmp_path / "images" / "1")]  # a folder: its 100 images
    exact = search_rows(capsys, str(tmp_path / "exact"), *queries, "-k", "5")
    scanned_all = search_rows(capsys, str(tmp_path / "ivf"), *queries, "-k", "5", "--nprobe", "8")
    assert len(exact) == 500 and [r["hamming_distance"] for r in scanned_all] == [r["hamming_distance"] for r in exact]
    one_file = sorted((tmp_path / "images" / "1").iterdir())[0]
    assert search_rows(capsys, str(tmp_path / "exact"), str(one_file), *queries, "-k", "5") == [
        *(r for r in exact if r["query"] == str(one_file)),
        *(r for r in exact if r["query"] != str(one_file)),
    ]  # the file named beside its folder is searched once
    written = search_rows(capsys, str(tmp_path / "ivf"), *queries, "-k", "5", "--out", str(tmp_path / "n.csv"))
    assert list(csv.DictReader((tmp_path / "n.csv").open())) == written
    # --radius: every image within the distance (as the top 300, the whole index, holds them), nearest first
    whole = search_rows(capsys, str(tmp_path / "exact"), str(one_file), "-k", "300")
    radius = int(whole[9]["hamming_distance"])
    within = search_rows(capsys, str(tmp_path / "exact"), str(one_file), "--radius", str(radius))
    expected = [r for r in whole if int(r["hamming_distance"]) <= radius]
    assert sorted(r["path"] for r in within) == sorted(r["path"] for r in expected) and len(within) >= 10
    assert [int(r["hamming_distance"]) for r in within] == sorted(int(r["hamming_distance"]) for r in expected)
    assert [r["rank"] for r in within] == [str(i) for i in range(1, len(within) + 1)]
    # a query whose code no indexed image has: no rows, and a note saying so
    (tmp_path / "single").mkdir()
    indexed = sorted((tmp_path / "images" / "0").iterdir())[0]
    (tmp_path / "single" / indexed.name).write_bytes(indexed.read_bytes())
    main(["build", str(run), str(tmp_path / "single"), "--device", "cpu", "--out", str(tmp_path / "one")])
    candidates = sorted((tmp_path / "images" / "1").iterdir())
    codes = RunEncoder(str(run), device="cpu")([indexed, *candidates])
    other = next(c for c, code in zip(candidates, codes[1:]) if (code != codes[0]).any())
    capsys.readouterr()
    main(["search", str(tmp_path / "one"), str(other), "--radius", "0", "--device", "cpu"])
    printed = capsys.readouterr()
    assert printed.out == "query,rank,hamming_distance,path\n"
    assert f"no indexed image within Hamming distance 0 of {other}" in printed.err
    with pytest.raises(SystemExit, match=r"--radius 99 must be in 0..16"):
        main(["search", str(tmp_path / "exact"), str(one_file), "--radius", "99", "--device", "cpu"])
    with pytest.raises(SystemExit, match="is an exact index: --nprobe is for IVF ones"):
        main(["search", str(tmp_path / "exact"), *queries, "--nprobe", "2", "--device", "cpu"])
    with pytest.raises(SystemExit):  # argparse: "--nprobe is for an IVF index: give --nlist too"
        main([*build, "--out", str(tmp_path / "x"), "--nprobe", "2"])
    assert "give --nlist too" in capsys.readouterr().err


def test_bad_inputs_name_the_problem(make_cfg, tmp_path):
    shallow = str(trained_run(make_cfg, tmp_path, "itq", ["dataset=digits", "method=itq", "bits=16", "logger=none"]))
    deep = str(trained_run(make_cfg, tmp_path, "pgh", TINY_PGH))
    images, out = tmp_path / "images", str(tmp_path / "index")
    images.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(images / "a.png")
    (Path(shallow) / "hasher.pt").unlink()  # as in a shallow run from before hashers were saved
    with pytest.raises(SystemExit, match=f"hasher.pt is missing: .* rerun its command with hydra.run.dir={shallow}"):
        main(["build", shallow, str(images), "--out", out])
    with pytest.raises(SystemExit, match="not a finished pgh-train run"):
        main(["build", str(tmp_path), str(images), "--out", out])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no image files under"):
        main(["build", deep, str(tmp_path / "empty"), "--out", out])
    with pytest.raises(SystemExit, match="index does not exist: build an index there with pgh-index build"):
        main(["search", out, str(images)])
    (images / "broken.png").write_bytes(b"not a png")
    with pytest.raises(SystemExit, match=r"1 unreadable image\(s\):\n  .*broken.png"):
        main(["build", deep, str(images), "--out", out, "--device", "cpu"])
    assert not Path(out).exists()  # nothing half-written


def test_spherical_hashing_runs_are_indexed_with_a_warning_about_the_distance(make_cfg, tmp_path, caplog):
    import logging

    sph = trained_run(make_cfg, tmp_path, "sph", ["dataset=digits", "method=sph", "bits=16", "logger=none"])
    with caplog.at_level(logging.WARNING, logger="pgh.retrieval.run_encoder"):
        encoder = RunEncoder(sph, device="cpu")
    assert "SpH ranks its codes by spherical distance; pgh-index ranks by Hamming distance" in caplog.text
    assert encoder.bits == 16


@pytest.mark.parametrize("nlist", [None, 4])
def test_update_codes_only_new_files_and_gives_the_index_a_fresh_build_gives(make_cfg, tmp_path, capsys, nlist):
    import shutil

    run = trained_run(make_cfg, tmp_path, "itq", SHALLOW["itq"])
    images = tmp_path / "images"
    write_database_images(run, images)  # 300 files in 0/, 1/, 2/
    ivf = ["--nlist", str(nlist)] if nlist else []
    main(["build", str(run), str(images), "--out", str(tmp_path / "index"), *ivf, "--device", "cpu"])
    main(["update", str(tmp_path / "index"), "--device", "cpu"])
    assert "is up to date (300 images)" in capsys.readouterr().out

    for gone in sorted((images / "1").iterdir())[:10]:
        gone.unlink()
    shutil.copytree(images / "2", images / "15")  # 100 new files, sorted between 1/ and 2/
    replaced = sorted((images / "0").iterdir())[0]  # a file replaced under its name by another image
    shutil.copyfile(sorted((images / "2").iterdir())[0], replaced)
    os.utime(replaced, ns=(replaced.stat().st_atime_ns, replaced.stat().st_mtime_ns + 10**9))
    touched = sorted((images / "1").iterdir())[-1]  # rewritten in place: same size, a new time
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    main(["update", str(tmp_path / "index"), "--device", "cpu", "--workers", "0"])
    printed = capsys.readouterr()
    assert "100 new, 2 changed, 10 gone | 390 images" in printed.out
    assert "coded 102 / 102 images" in printed.err  # the new and the changed files alone are read and coded

    main(["build", str(run), str(images), "--out", str(tmp_path / "fresh"), *ivf, "--device", "cpu"])
    for name in ("paths.txt", "codes.npy", "stamps.npy"):
        assert (tmp_path / "index" / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes()
    updated, fresh = (json.loads((tmp_path / d / "index.json").read_text()) for d in ("index", "fresh"))
    assert {k: v for k, v in updated.items() if k != "coding_seconds"} == {
        k: v for k, v in fresh.items() if k != "coding_seconds"
    }
    query = str(images / "15" / sorted(p.name for p in (images / "15").iterdir())[0])
    assert search_rows(capsys, str(tmp_path / "index"), query, "-k", "3") == search_rows(
        capsys, str(tmp_path / "fresh"), query, "-k", "3"
    )


def test_update_errors_name_the_fix(make_cfg, tmp_path):
    run = trained_run(make_cfg, tmp_path, "itq", SHALLOW["itq"])
    write_database_images(run, tmp_path / "images")
    main(["build", str(run), str(tmp_path / "images"), "--out", str(tmp_path / "index"), "--device", "cpu"])
    (tmp_path / "index" / "codes.npy").unlink()  # as an index built before codes.npy was written
    with pytest.raises(SystemExit, match="predates codes.npy and stamps.npy, which update needs: build it again"):
        main(["update", str(tmp_path / "index")])
    (tmp_path / "unfinished").mkdir()  # as a build killed before its index.json
    with pytest.raises(SystemExit, match="unfinished holds no finished index \\(no index.json\\)"):
        main(["update", str(tmp_path / "unfinished")])
    for not_an_index in (tmp_path / "images", run):  # the images folder or the run given by mistake
        with pytest.raises(SystemExit, match="holds no finished index \\(no index.json\\)"):
            main(["update", str(not_an_index)])
        assert not (not_an_index / ".lock").exists()  # refused before the writer's lock file is made there


def test_damaged_index_files_are_named_with_the_fix(make_cfg, tmp_path):
    """A damaged index.json, index.faissindex or codes.npy: the file and `build again`, not a KeyError,
    a FAISS C++ trace or NumPy's read error."""
    import shutil

    run = trained_run(make_cfg, tmp_path, "itq", SHALLOW["itq"])
    write_database_images(run, tmp_path / "images")
    main(["build", str(run), str(tmp_path / "images"), "--out", str(tmp_path / "good"), "--device", "cpu"])
    query = str(next((tmp_path / "images").rglob("*.png")))
    for name, content, message in (
        ("index.json", "{}", "index.json lacks bits, run, images: build the index again"),
        ("index.json", "{not json", "index.json is not valid JSON .*: build the index again"),
        ("index.faissindex", "garbage", "index.faissindex is not a FAISS binary index FAISS can read .*not recognized"),
        ("codes.npy", "\x93NUMPY", "codes.npy or stamps.npy is unreadable .*: build the index again"),
    ):
        shutil.rmtree(tmp_path / "index", ignore_errors=True)
        shutil.copytree(tmp_path / "good", tmp_path / "index")
        (tmp_path / "index" / name).write_text(content)
        command = (
            ["update", str(tmp_path / "index")] if name == "codes.npy" else ["search", str(tmp_path / "index"), query]
        )
        with pytest.raises(SystemExit, match=message):
            main(command)


def test_index_files_that_read_but_do_not_match_are_named_with_the_fix(make_cfg, tmp_path, capsys):
    """Files that load but disagree with index.json (rows, width, keys, other codes), and a missing
    paths.txt: the file and `build the index again`, not an IndexError, a KeyError, NumPy's "all input
    arrays must have the same shape" or a bare Errno 2; nor wrong neighbours from another index."""
    import re
    import shutil

    run = trained_run(make_cfg, tmp_path, "itq", SHALLOW["itq"])
    images, good, index = tmp_path / "images", tmp_path / "good", tmp_path / "index"
    at = re.escape(f"pgh-index: {index}/")
    write_database_images(run, images)
    main(["build", str(run), str(images), "--out", str(good), "--device", "cpu"])
    codes, stamps = np.load(good / "codes.npy"), np.load(good / "stamps.npy")
    info = json.loads((good / "index.json").read_text())
    assert info["codes_sha1"] == hashlib.sha1(codes.tobytes()).hexdigest()
    (images / "0" / "0000.png").unlink()  # update has a file to drop: it gets past "is up to date"
    other_codes = codes[::-1].copy()  # the same width and count, other codes
    wrong = {
        "codes.npy": (
            (
                codes[:-1],
                "codes.npy holds uint8 \\[299, 2\\], not the uint8 \\[300, 2\\] of index.json's 300 codes of 16 bits",
            ),
            (np.concatenate([codes, codes], 1), "codes.npy holds uint8 \\[300, 4\\], not the uint8 \\[300, 2\\]"),
            (codes.astype(np.int64), "codes.npy holds int64 \\[300, 2\\], not the uint8 \\[300, 2\\]"),
            (other_codes, "codes.npy holds other codes than the index was built with \\(index.json's codes_sha1\\)"),
        ),
        "stamps.npy": ((stamps[:-1], "stamps.npy holds int64 \\[299, 2\\], not the int64 \\[300, 2\\]"),),
    }
    for name, cases in wrong.items():
        for array, message in cases:
            shutil.rmtree(index, ignore_errors=True)
            shutil.copytree(good, index)
            np.save(index / name, array)
            with pytest.raises(SystemExit, match=f"^{at}{message}.*: build the index again$"):
                main(["update", str(index), "--device", "cpu"])
    for key in ("nlist", "count"):
        shutil.rmtree(index)
        shutil.copytree(good, index)
        (index / "index.json").write_text(json.dumps({k: v for k, v in info.items() if k != key}))
        with pytest.raises(SystemExit, match=f"^{at}index.json lacks {key}: build the index again$"):
            main(["update", str(index), "--device", "cpu"])
    (index / "index.json").write_text(json.dumps({**info, "bits": "16"}))
    with pytest.raises(SystemExit, match=r"index.json holds bits='16' of the wrong type: build the index again$"):
        main(["update", str(index), "--device", "cpu"])
    shutil.rmtree(index)
    shutil.copytree(good, index)
    (index / "paths.txt").write_text("".join(f"{name}\n" for name in (good / "paths.txt").read_text().split()[:-1]))
    with pytest.raises(SystemExit, match=f"^{at}paths.txt lists 299 files, index.json 300: build"):
        main(["update", str(index), "--device", "cpu"])
    (index / "paths.txt").unlink()
    query = str(images / "1" / "0001.png")
    for command in (["update", str(index)], ["search", str(index), query]):
        with pytest.raises(SystemExit, match=f"^{at}paths.txt is missing: build the index again$"):
            main([*command, "--device", "cpu"])

    # index.faissindex of other codes of the same width and count: it loaded and gave wrong neighbours
    shutil.rmtree(index)
    shutil.copytree(good, index)
    BinaryIndex(16, use_gpu=False).add(other_codes).save(index / "index.faissindex")
    with pytest.raises(SystemExit, match=r"index.faissindex holds other codes than the index was built with"):
        main(["search", str(index), query, "--device", "cpu"])
    # an index from before the checksum: no checksum, no check
    shutil.copyfile(good / "index.faissindex", index / "index.faissindex")
    (index / "index.json").write_text(json.dumps({k: v for k, v in info.items() if k != "codes_sha1"}))
    rows = search_rows(capsys, str(index), query)
    assert len(rows) == 10 and rows[0]["hamming_distance"] == "0"
    BinaryIndex(16, use_gpu=False).add(codes[:-1]).save(index / "index.faissindex")  # then the count still tells
    with pytest.raises(SystemExit, match=r"index.faissindex holds 299 codes of 16 bits, but paths.txt lists 300 files"):
        main(["search", str(index), query, "--device", "cpu"])


def test_index_checks_before_coding_and_after_the_run_changed(make_cfg, tmp_path, capsys):
    import shutil

    run = trained_run(make_cfg, tmp_path, "itq", SHALLOW["itq"])
    images, index = tmp_path / "images", tmp_path / "index"
    write_database_images(run, images)
    build = ["build", str(run), str(images), "--device", "cpu"]
    (tmp_path / "a_file").write_text("")
    with pytest.raises(SystemExit, match="--out .*a_file is a file: name a directory"):
        main([*build, "--out", str(tmp_path / "a_file")])
    with pytest.raises(SystemExit, match="300 images for --nlist=400 IVF centroids: build with a smaller --nlist"):
        main([*build, "--out", str(index), "--nlist", "400"])
    assert "coded" not in capsys.readouterr().err  # stopped before reading a single image
    for options, message in (  # argparse's errors, naming the command's options rather than BinaryIndex's
        (["--nlist", "8", "--nprobe", "50"], "--nprobe 50 must be at most --nlist 8"),
        (["--nlist", "0"], "--nlist must be >= 1 (IVF centroids; none: exact search), got 0"),
        (["--nlist", "8", "--nprobe", "0"], "--nprobe must be >= 1, got 0"),
    ):
        with pytest.raises(SystemExit):
            main([*build, "--out", str(index), *options])
        assert f"pgh-index: error: {message}\n" in capsys.readouterr().err
    assert not index.exists()  # nothing written

    main([*build, "--out", str(index), "--nlist", "8"])
    with pytest.raises(SystemExit, match="--out .*images is a folder: name a file for the CSV"):
        main(["search", str(index), str(images / "0"), "--out", str(images), "--device", "cpu"])
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["search", str(index), str(images / "0"), "-k", "0"])
    assert "-k must be >= 1, got 0" in capsys.readouterr().err
    one = str(images / "0" / "0000.png")
    capsys.readouterr()
    main(["search", str(index), one, "-k", "1000", "--device", "cpu"])  # k capped at the index's size
    printed = capsys.readouterr()
    assert len(printed.out.splitlines()) == 1 + 300 and "holds 300 images: 300 neighbours a query" in printed.err
    main(["search", str(index), one, "-k", "1000", "--nprobe", "1", "--device", "cpu"])  # one list: fewer rows
    printed = capsys.readouterr()
    assert "1 of 1 queries got fewer than 300 neighbours: the 1 probed lists of 8 held fewer" in printed.err
    main(["search", str(index), one, "-k", "200", "--nprobe", "1", "--device", "cpu"])  # within the index's size
    assert "1 of 1 queries got fewer than 200 neighbours" in capsys.readouterr().err
    assert len(printed.out.splitlines()) < 1 + 300
    with pytest.raises(SystemExit, match=r"^pgh-index: --nprobe 9 must be in 1..8 \(the index's nlist\)$"):
        main(["search", str(index), one, "--nprobe", "9", "--device", "cpu"])

    kept = sorted(images.rglob("*.png"))[:5]
    for path in sorted(images.rglob("*.png"))[5:]:
        path.unlink()
    with pytest.raises(SystemExit, match="5 images for the index's nlist=8 IVF centroids: build with a smaller"):
        main(["update", str(index), "--device", "cpu"])
    for path in kept:
        path.unlink()
    with pytest.raises(SystemExit, match="no image files left under .*images: nothing to index"):
        main(["update", str(index), "--device", "cpu"])

    # the run refitted in place (or resumed) after the index was built: its codes are another model's
    trained_run(make_cfg, tmp_path, "itq", [*SHALLOW["itq"], "seed=1"])
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "query.png")
    for command in (["update", str(index)], ["search", str(index), str(tmp_path / "query.png")]):
        with pytest.raises(SystemExit, match="hasher.pt changed since .* was built .*build the index again"):
            main([*command, "--device", "cpu"])
    shutil.move(run, tmp_path / "moved")
    with pytest.raises(SystemExit, match="names, does not exist \\(moved or deleted\\?\\)"):
        main(["update", str(index), "--device", "cpu"])
    with pytest.raises(SystemExit, match="nowhere does not exist: build an index there"):
        main(["search", str(tmp_path / "nowhere"), one])


def test_an_output_folder_that_cannot_be_written_is_refused_before_any_image_is_read(tmp_path, monkeypatch):
    """A read-only --out (or index folder) had ended in a traceback, for build after the coding. Tests
    run as root, who writes anywhere: a file above --out, and an os.access that says no, stand for a
    read-only folder. The run and images named do not exist: the output is checked first."""
    (tmp_path / "a_file").write_text("")
    under_a_file = str(tmp_path / "a_file" / "out")
    with pytest.raises(
        SystemExit, match=r"^pgh-index: cannot write --out .*a_file/out: .*a_file is a file, not a folder"
    ):
        main(["build", str(tmp_path / "run"), str(tmp_path / "images"), "--out", under_a_file])
    with pytest.raises(SystemExit, match=r"^pgh-index: cannot write --out .*a_file/out: .*: choose a writable --out"):
        main(["search", str(tmp_path / "index"), str(tmp_path / "query.png"), "--out", under_a_file])
    index, real_access = tmp_path / "index", os.access
    index.mkdir()
    (index / "index.json").write_text("{}")
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != index and real_access(path, mode, **kw))
    with pytest.raises(
        SystemExit, match=r"^pgh-index: cannot write .*index: .*index is not writable: fix its permissions"
    ):
        main(["update", str(index)])
    assert sorted(p.name for p in index.iterdir()) == ["index.json"]  # no lock file made there


def test_file_names_with_line_breaks_are_refused_and_other_odd_names_round_trip(make_cfg, tmp_path, capsys):
    """paths.txt holds a name a line: a name with "\\n" made every later name wrong and the index
    unusable ("disagree; rebuild it", which no rebuild fixed); names with \\x1c or \\u2028 were split
    by str.splitlines on reading."""
    run = str(trained_run(make_cfg, tmp_path, "itq", ["dataset=digits", "method=itq", "bits=16", "logger=none"]))
    images, out = tmp_path / "images", str(tmp_path / "index")
    images.mkdir()
    for name in ("a\nb.png", "c\rd.png", "c\x1cd.png", 'e\u2028f, "g".png', "h.png"):
        Image.fromarray(np.full((8, 8), len(name), np.uint8)).save(images / name)
    with pytest.raises(SystemExit, match=r"2 file name\(s\) under .* line break or .*'a\\nb.png', 'c\\rd.png'; rename"):
        main(["build", run, str(images), "--out", out])
    (images / "a\nb.png").unlink()
    (images / "c\rd.png").unlink()
    main(["build", run, str(images), "--out", out])
    rows = search_rows(capsys, out, str(images / "h.png"), "-k", "3")
    assert sorted(row["path"] for row in rows) == ["c\x1cd.png", 'e\u2028f, "g".png', "h.png"]
    main(["update", out])
    assert "is up to date (3 images)" in capsys.readouterr().out
    # a name that is not UTF-8 failed only when paths.txt was written, leaving update's index unfinished
    import os

    os.close(os.open(os.fsencode(images) + b"/i\xff.png", os.O_CREAT | os.O_WRONLY))
    with pytest.raises(SystemExit, match=r"1 file name\(s\) .* not UTF-8.*'i\\udcff.png'"):
        main(["update", out])
    assert len(search_rows(capsys, out, str(images / "h.png"), "-k", "3")) == 3  # the index still answers
    # nor may a query's name (it heads the rows of the CSV --out writes): refused before coding
    with pytest.raises(SystemExit, match=r"1 file name\(s\) .* not UTF-8.*'.*i\\udcff.png'"):
        main(["search", out, os.fsdecode(os.fsencode(images) + b"/i\xff.png"), "--out", str(tmp_path / "hits.csv")])
    assert not (tmp_path / "hits.csv").exists()
    # hidden files and folders are no part of an index, as they are no part of dataset=folder
    os.remove(os.fsencode(images) + b"/i\xff.png")
    (images / ".ipynb_checkpoints").mkdir()
    for hidden in (".ipynb_checkpoints/h-checkpoint.png", "._h.png"):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(images / hidden)
    main(["update", out])
    assert "is up to date (3 images)" in capsys.readouterr().out


def test_a_write_that_fails_or_stops_midway_never_costs_the_index(make_cfg, tmp_path, capsys, monkeypatch):
    """update writes its new set of files into INDEX_DIR/.staging and moves it into place once whole:
    a full disk while writing leaves the old index as it was; a stop while moving is finished by the
    next update (a search, which may run beside a writer, leaves the folder alone and names the fix),
    which then answers as a fresh build of the folder would. A second writer is refused while one
    holds the folder."""
    import fcntl

    import pgh.retrieval.cli as cli

    run = trained_run(make_cfg, tmp_path, "itq", SHALLOW["itq"])
    images, index = tmp_path / "images", tmp_path / "index"
    write_database_images(run, images)
    main(["build", str(run), str(images), "--out", str(index), "--device", "cpu"])
    query = str(images / "0" / "0000.png")
    before = search_rows(capsys, str(index), query, "-k", "5")
    for gone in sorted((images / "1").iterdir()):
        gone.unlink()

    def full_disk(path, array):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(cli, "save_npy", full_disk)
        with pytest.raises(OSError, match="No space left on device"):
            main(["update", str(index), "--device", "cpu"])
    assert search_rows(capsys, str(index), query, "-k", "5") == before

    real_replace = os.replace

    def stopped_at_stamps(src, dst):  # killed after moving index.faissindex and codes.npy
        if Path(dst) == index / "stamps.npy":
            raise KeyboardInterrupt
        real_replace(src, dst)

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", stopped_at_stamps)
        with pytest.raises(KeyboardInterrupt):
            main(["update", str(index), "--device", "cpu"])
    assert not (index / "index.json").exists() and (index / ".staging" / "index.json").exists()
    with pytest.raises(SystemExit, match="stopped while it moved its files into place: pgh-index update .* finishes"):
        main(["search", str(index), query, "--device", "cpu"])
    assert (index / ".staging" / "index.json").exists()  # the search changed nothing
    with open(index / ".lock", "a") as other_writer:
        fcntl.flock(other_writer, fcntl.LOCK_EX)
        with pytest.raises(SystemExit, match="another pgh-index build or update is writing .*index: let it finish"):
            main(["update", str(index), "--device", "cpu"])
        fcntl.flock(other_writer, fcntl.LOCK_UN)
    capsys.readouterr()
    main(["update", str(index), "--device", "cpu"])
    assert "finishing a write that was stopped while it moved its files into place" in capsys.readouterr().err
    assert not (index / ".staging").exists()
    main(["build", str(run), str(images), "--out", str(tmp_path / "fresh"), "--device", "cpu"])
    for name in ("paths.txt", "codes.npy", "stamps.npy", "index.faissindex"):
        assert (index / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes()
    fresh = search_rows(capsys, str(tmp_path / "fresh"), query, "-k", "5")
    assert search_rows(capsys, str(index), query, "-k", "5") == fresh
    assert json.loads((index / "index.json").read_text())["count"] == 200


def test_a_search_waits_while_a_writer_moves_its_files_into_place(make_cfg, tmp_path):
    """A writer moves index.faissindex, paths.txt and index.json one by one; a search reading between two
    moves would pair one write's names with another's index (the counts can agree), so it waits for the
    writer's swap lock. A folder holding no index gets no lock file from a search."""
    import fcntl
    import threading

    run = trained_run(make_cfg, tmp_path, "itq", SHALLOW["itq"])
    images, index, hits = tmp_path / "images", tmp_path / "index", tmp_path / "hits.csv"
    write_database_images(run, images)
    main(["build", str(run), str(images), "--out", str(index), "--device", "cpu"])
    command = ["search", str(index), str(images / "0" / "0000.png"), "-k", "5", "--out", str(hits), "--device", "cpu"]
    with open(index / ".swap.lock", "a") as writer:
        fcntl.flock(writer, fcntl.LOCK_EX)
        searching = threading.Thread(target=main, args=(command,))
        searching.start()
        searching.join(timeout=1.0)
        assert searching.is_alive() and not hits.exists()
        fcntl.flock(writer, fcntl.LOCK_UN)
    searching.join(timeout=60)
    assert not searching.is_alive() and len(list(csv.DictReader(hits.open()))) == 5
    with pytest.raises(SystemExit, match="holds no finished index"):
        main(["search", str(images), str(images / "0" / "0000.png"), "--device", "cpu"])
    assert not (images / ".swap.lock").exists()


def test_features_are_computed_on_the_device_asked_for_not_the_runs(make_cfg, tmp_path):
    """A run trained with features.device=cuda codes new images on --device cpu (on a machine without
    CUDA it could not be indexed at all)."""
    run = trained_run(make_cfg, tmp_path, "itq", SHALLOW["itq"])
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("device: auto", "device: cuda"))
    assert "device: cuda" in config.read_text()
    encoder = RunEncoder(run, device="cpu")
    assert str(encoder.features.device) == "cpu"


def test_images_unlike_the_runs_training_images_get_a_warning(make_cfg, tmp_path, capsys):
    """Colour 64-px photos coded by a run trained on 8-px grey digits: converted and resized, so coded,
    but with a warning naming both; the digits themselves, also stored as RGB, get none."""
    run = trained_run(make_cfg, tmp_path, "sh", SHALLOW["sh"])
    write_database_images(run, tmp_path / "digits")
    for name in ("0/0000.png", "1/0001.png"):  # grey digits stored as RGB are still grey
        path = tmp_path / "digits" / name
        Image.open(path).convert("RGB").save(path)
    capsys.readouterr()
    main(["build", str(run), str(tmp_path / "digits"), "--out", str(tmp_path / "same"), "--device", "cpu"])
    assert "warning" not in capsys.readouterr().err

    (tmp_path / "photos").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "photos" / f"{i}.png")
    main(["build", str(run), str(tmp_path / "photos"), "--out", str(tmp_path / "other"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert "warning: the images (e.g. 0.png) are in colour (read as grey) and 64x64 (resized to 8x8), unlike " \
           "the 1-channel 8x8 images (digits)" in err  # fmt: skip
    assert json.loads((tmp_path / "other" / "index.json").read_text())["count"] == 3  # still built


def test_a_thin_strip_first_among_the_images_is_indexed_with_the_others(make_cfg, tmp_path, capsys):
    """The grey-or-colour check shrinks the first image to at most 256 pixels a side: a 1000x1 strip
    shrank to a height of 0, which PIL refuses, and the build failed before coding anything."""
    run = trained_run(make_cfg, tmp_path, "sh", SHALLOW["sh"])
    write_database_images(run, tmp_path / "images")
    strip = np.random.default_rng(0).integers(0, 256, (1, 1000, 3), dtype=np.uint8)
    Image.fromarray(strip).save(tmp_path / "images" / "0" / "0.png")  # sorts first: 0/0.png
    main(["build", str(run), str(tmp_path / "images"), "--out", str(tmp_path / "index"), "--device", "cpu"])
    assert "(e.g. 0.png) are in colour (read as grey) and 1000x1" in capsys.readouterr().err
    assert json.loads((tmp_path / "index" / "index.json").read_text())["count"] == N_IMAGES + 1
    assert (tmp_path / "index" / "paths.txt").read_text().splitlines()[0] == "0/0.png"
