"""Readers of corpora on disk: LibriMix (CSV), WSJ0-2mix/3mix, WHAM!, dynamic mixing.

Every test writes real wav files with soundfile in a temp folder.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from masksep.config import load_config
from masksep.data import build_dataset
from masksep.data.export import synth
from masksep.data.items import FileMixtures
from masksep.errors import ConfigError, UserError


def cfg_for(kind: str, root, *sets: str):
    return load_config(None, [f"data.kind={kind}", f"data.root={root}", *sets])


def assert_mixture(mix: torch.Tensor, src: torch.Tensor, n_src: int = 2, tol: float = 2e-4):
    assert mix.dtype == torch.float32 and src.dtype == torch.float32
    assert mix.dim() == 1 and src.shape == (n_src, mix.shape[0])
    # files are 16-bit: the mix equals the sum of sources to quantization
    assert float((mix - src.sum(0)).abs().max()) < tol
    assert float(src.abs().max()) > 1e-3  # not silence


@pytest.fixture(scope="module")
def librimix(tmp_path_factory):
    root = tmp_path_factory.mktemp("Libri2Mix") / "wav8k" / "min"
    synth(root, "librimix", "train", 6, seconds=1.0, max_seconds=2.0, seed=1)
    synth(root, "librimix", "dev", 2, seconds=1.0, seed=1)
    synth(root, "librimix", "test", 3, seconds=1.0, max_seconds=2.0, noise=True, seed=1)
    return root


def test_librimix_layout_mirrors_the_corpus(librimix):
    meta = librimix / "metadata"
    assert sorted(p.name for p in meta.iterdir()) == [
        "mixture_dev_mix_clean.csv",
        "mixture_test_mix_both.csv",
        "mixture_test_mix_clean.csv",
        "mixture_train-360_mix_clean.csv",
    ]
    header = (meta / "mixture_test_mix_both.csv").read_text().splitlines()[0]
    assert header == "mixture_ID,mixture_path,source_1_path,source_2_path,noise_path,length"
    for sub in ("mix_clean", "mix_both", "s1", "s2", "noise"):
        assert len(list((librimix / "test" / sub).glob("*.wav"))) == 3
    info = sf.info(str(next((librimix / "test" / "s1").glob("*.wav"))))
    assert info.samplerate == 8000 and info.channels == 1 and info.subtype == "PCM_16"


def test_librimix_eval_items_are_whole_utterances(librimix):
    ds = build_dataset(cfg_for("librimix", librimix), "test")
    assert len(ds) == 3 and ds.fixed_length is False
    lengths = set()
    for i in range(len(ds)):
        mix, src = ds[i]
        assert_mixture(mix, src)
        lengths.add(mix.shape[0])
        on_disk, _ = sf.read(str(librimix / "test" / "mix_clean" / f"{ds.item_name(i)}.wav"))
        assert mix.shape[0] == on_disk.shape[0]
    assert len(lengths) > 1  # utterances of different lengths, not cropped
    assert ds.item_name(0) == "synthte00000"


def test_librimix_training_crops_are_fixed_length_and_deterministic_per_epoch(librimix):
    cfg = cfg_for("librimix", librimix, "data.segment_s=0.5", "seed=3")
    ds = build_dataset(cfg, "train")
    assert ds.fixed_length is True and len(ds) == 6
    ds.set_epoch(1)
    a = [ds[i] for i in range(len(ds))]
    for mix, src in a:
        assert mix.shape == (4000,)
        assert_mixture(mix, src)
    again = build_dataset(cfg, "train")
    again.set_epoch(1)
    assert all(torch.equal(a[i][0], again[i][0]) for i in range(len(ds)))
    ds.set_epoch(2)
    assert not all(torch.equal(a[i][0], ds[i][0]) for i in range(len(ds)))  # new crops per epoch
    # a DataLoader batches the crops (default collate)
    mix, src = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert mix.shape == (3, 4000) and src.shape == (3, 2, 4000)


def test_a_negative_seed_crops_as_any_other(librimix):
    # SeedSequence refuses negative words; the synthetic data already mapped them
    crops = [build_dataset(cfg_for("librimix", librimix, "data.segment_s=0.5", f"seed={seed}"), "train")[0][0]
             for seed in (-1, 1)]
    assert crops[0].shape == crops[1].shape == (4000,) and not torch.equal(*crops)


def test_librimix_short_utterances_are_padded_to_the_segment(librimix):
    ds = build_dataset(cfg_for("librimix", librimix, "data.segment_s=3.0"), "train")
    mix, src = ds[0]
    assert mix.shape == (24000,) and src.shape == (2, 24000)
    assert float(mix[-100:].abs().max()) == 0.0  # the utterances are at most 2 s


def test_librimix_sep_noisy_reads_mix_both_with_clean_targets(librimix):
    clean = build_dataset(cfg_for("librimix", librimix), "test")
    noisy = build_dataset(cfg_for("librimix", librimix, "data.task=sep_noisy"), "test")
    (_, sc), (mn, sn) = clean[1], noisy[1]
    assert torch.equal(sc, sn)  # the same speakers are the targets
    residual = mn - sn.sum(0)  # the noise
    assert float(residual.pow(2).mean()) > 0.1 * float(sn.sum(0).pow(2).mean())
    noise, _ = sf.read(str(librimix / "test" / "noise" / f"{noisy.item_name(1)}.wav"), dtype="float32")
    assert np.abs(residual.numpy() - noise).max() < 2e-4


def test_librimix_root_from_the_corpus_folder_and_an_environment_variable(librimix, monkeypatch):
    corpus = librimix.parent.parent  # .../Libri2Mix, holding wav8k/min
    monkeypatch.setenv("MASKSEP_TEST_DATA", str(corpus.parent))
    cfg = cfg_for("librimix", "${MASKSEP_TEST_DATA}/" + corpus.name)
    assert len(build_dataset(cfg, "valid")) == 2  # dev
    monkeypatch.delenv("MASKSEP_TEST_DATA")
    with pytest.raises(ConfigError, match=r"MASKSEP_TEST_DATA\} is not set"):
        build_dataset(cfg, "valid")


def test_librimix_train_subset_field_picks_the_csv(librimix):
    with pytest.raises(UserError, match="mixture_train-100_mix_clean.csv: metadata CSV not found"):
        build_dataset(cfg_for("librimix", librimix, "data.librimix_train=train-100"), "train")


def test_librimix_csv_paths_of_another_machine_are_found_below_the_root(librimix, tmp_path):
    # LibriMix CSVs hold the absolute paths of the machine that generated them
    moved = tmp_path / "copy"
    shutil.copytree(librimix, moved)
    csv = moved / "metadata" / "mixture_test_mix_clean.csv"
    assert str(librimix) in csv.read_text()
    shutil.rmtree(librimix / "test" / "s2")  # the old paths no longer all exist
    try:
        ds = build_dataset(cfg_for("librimix", moved), "test")
        assert_mixture(*ds[0])
    finally:
        shutil.copytree(moved / "test" / "s2", librimix / "test" / "s2")


def test_librimix_with_more_sources_than_the_model_is_refused(tmp_path):
    synth(tmp_path, "librimix", "test", 2, n_src=3, seconds=0.5)
    with pytest.raises(UserError, match="lists 3 sources per mixture but the model separates 2"):
        build_dataset(cfg_for("librimix", tmp_path), "test")
    ds = build_dataset(cfg_for("librimix", tmp_path, "n_src=3"), "test")
    assert_mixture(*ds[0], n_src=3)


def test_not_a_librimix_folder_is_one_line(tmp_path):
    with pytest.raises(UserError, match="not a LibriMix folder") as info:
        build_dataset(cfg_for("librimix", tmp_path), "test")
    assert "\n" not in str(info.value)


def write_wsj0(root, split="tt", n_src=2, n=3, rate=8000, lengths=(6000, 7000, 8000)):
    """A WSJ0-mix folder written by hand with soundfile (mix = sum of sources)."""
    rng = np.random.default_rng(0)
    for i in range(n):
        srcs = [0.1 * rng.standard_normal(lengths[i % len(lengths)]) for _ in range(n_src)]
        name = f"01{i}c0201_1.{i}_40{i}o030f_-1.{i}.wav"
        for k, s in enumerate(srcs, start=1):
            (root / split / f"s{k}").mkdir(parents=True, exist_ok=True)
            sf.write(str(root / split / f"s{k}" / name), s, rate, subtype="PCM_16")
        (root / split / "mix").mkdir(parents=True, exist_ok=True)
        sf.write(str(root / split / "mix" / name), np.sum(srcs, axis=0), rate, subtype="PCM_16")


def test_wsj0_2mix_folders(tmp_path):
    root = tmp_path / "wsj0-mix" / "2speakers" / "wav8k" / "min"
    write_wsj0(root, "tt")
    write_wsj0(root, "tr")
    # root given as the corpus folder: 2speakers/wav8k/min is found below it
    ds = build_dataset(cfg_for("wsj0mix", tmp_path / "wsj0-mix"), "test")
    assert len(ds) == 3 and not ds.fixed_length
    assert [ds[i][0].shape[0] for i in range(3)] == [6000, 7000, 8000]
    assert ds.item_name(0) == "010c0201_1.0_400o030f_-1.0"
    assert_mixture(*ds[2])
    train = build_dataset(cfg_for("wsj0mix", root, "data.segment_s=0.5"), "train")
    assert train.fixed_length and train[0][0].shape == (4000,)


def test_wsj0_3mix_folders(tmp_path):
    write_wsj0(tmp_path, "cv", n_src=3)
    with pytest.raises(UserError, match="holds s3/"):
        build_dataset(cfg_for("wsj0mix", tmp_path), "valid")
    ds = build_dataset(cfg_for("wsj0mix", tmp_path, "n_src=3"), "valid")
    assert_mixture(*ds[0], n_src=3)


def test_wham_clean_and_noisy(tmp_path):
    synth(tmp_path / "wham" / "wav8k" / "min", "wham", "tt", 2, seconds=0.6, seed=2)
    root = tmp_path / "wham"
    clean = build_dataset(cfg_for("wham", root), "test")
    noisy = build_dataset(cfg_for("wham", root, "data.task=sep_noisy"), "test")
    assert_mixture(*clean[0])
    mix, src = noisy[0]
    assert torch.equal(src, clean[0][1])
    assert float((mix - src.sum(0)).abs().max()) > 1e-2  # noise in the mixture
    with pytest.raises(ConfigError, match="data.task"):
        cfg_for("wsj0mix", root, "data.task=sep_noisy")


def test_dynamic_mixing_from_single_speaker_utterances(tmp_path):
    for split, n in (("train", 8), ("valid", 4), ("test", 4)):
        synth(tmp_path, "utterances", split, n, seconds=0.5, max_seconds=1.0, seed=4)
    cfg = cfg_for(
        "dynamic", tmp_path, "data.train_items=5", "data.valid_items=3", "data.segment_s=0.25",
        "data.mix_gain_db_min=-3", "data.mix_gain_db_max=3",
    )
    train = build_dataset(cfg, "train")
    assert len(train) == 5 and train.fixed_length
    train.set_epoch(1)
    mix, src = train[0]
    assert mix.shape == (2000,) and torch.allclose(mix, src.sum(0))
    names = train.item_name(0).split("_")
    assert len(names) == 2 and names[0].split("-")[0] != names[1].split("-")[0]  # two speakers
    again = build_dataset(cfg, "train")
    again.set_epoch(1)
    assert torch.equal(again[0][0], mix)
    train.set_epoch(2)
    assert not torch.equal(train[0][0], mix)  # new pairs, crops and gains each epoch
    valid = build_dataset(cfg, "valid")
    assert len(valid) == 3 and not valid.fixed_length
    v0 = valid[0]
    assert torch.equal(v0[0], build_dataset(cfg, "valid")[0][0])
    assert v0[0].shape[0] >= 4000  # whole utterances, cut to the shorter (>= 0.5 s)
    # the relative level follows the gain range (RMS-normalised sources, +-3 dB)
    for i in range(3):
        _, s = valid[i]
        ratio_db = 20 * np.log10(float(s[0].pow(2).mean().sqrt() / s[1].pow(2).mean().sqrt()))
        assert abs(ratio_db) <= 6.0 + 1e-3


def test_resampling_only_when_the_config_asks(tmp_path):
    synth(tmp_path, "librimix", "test", 2, sample_rate=16000, seconds=0.5)
    synth(tmp_path, "librimix", "train-100", 2, sample_rate=16000, seconds=0.5)
    with pytest.raises(UserError, match=r"sample rate is 16000 Hz, expected 8000 Hz"):
        build_dataset(cfg_for("librimix", tmp_path), "test")
    ds = build_dataset(cfg_for("librimix", tmp_path, "data.resample=true"), "test")
    mix, src = ds[0]
    assert mix.shape == (4000,) and src.shape == (2, 4000)
    assert float((mix - src.sum(0)).abs().max()) < 1e-3
    train = build_dataset(
        cfg_for("librimix", tmp_path, "data.resample=true", "data.segment_s=0.2",
                "data.librimix_train=train-100"), "train")
    assert isinstance(train, FileMixtures) and train.fixed_length
    mix, src = train[1]
    assert mix.shape == (1600,) and float((mix - src.sum(0)).abs().max()) < 1e-3


def test_resampled_crops_line_up_with_the_whole_resampled_file(tmp_path):
    from masksep.data import audio

    x = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000) * 0.5
    path = tmp_path / "tone.wav"
    sf.write(str(path), x, 16000, subtype="FLOAT")
    whole = audio.read_mono(path, 8000, allow_resample=True)
    assert whole.shape == (8000,)
    crop = audio.read_mono(path, 8000, 3001, 1000, allow_resample=True)
    assert np.abs(crop - whole[3001:4001]).max() < 1e-3
    with pytest.raises(UserError, match="tone.wav: sample rate is 16000 Hz but the model runs at 8000 Hz"):
        audio.read_mono(path, 8000)


def two_corpora(tmp_path):
    roots = tmp_path / "espeak", tmp_path / "kokoro"
    for root, seed in zip(roots, (4, 9), strict=True):
        for split, n in (("train", 6), ("valid", 4), ("test", 4)):
            synth(root, "utterances", split, n, seconds=0.5, max_seconds=1.0, seed=seed)
    return roots


def roots_cfg(*roots_and_weights, sets=()):
    listed = ", ".join(f"{{root: '{r}', weight: {w}}}" for r, w in roots_and_weights)
    return load_config(None, ["data.kind=dynamic", f"data.roots=[{listed}]", "data.segment_s=0.25",
                              "data.train_items=400", "data.valid_items=3", *sets])


def test_dynamic_mixing_from_several_corpora_each_mixture_from_one_chosen_by_weight(tmp_path):
    a, b = two_corpora(tmp_path)
    train = build_dataset(roots_cfg((a, 3), (b, 1)), "train")
    assert len(train.paths) == 12
    corpora = [{train.paths[k].is_relative_to(a) for k in train.pick(i)} for i in range(400)]
    assert all(len(c) == 1 for c in corpora)  # never one utterance of each
    share = sum(c == {True} for c in corpora) / 400
    assert 0.68 < share < 0.82  # 3 : 1 is 0.75 (binomial SD 0.022)
    for i in range(3):
        mix, src = train[i]
        assert_mixture(mix, src)
    # common random numbers: the same seed, the same stream, epoch by epoch
    again = build_dataset(roots_cfg((a, 3), (b, 1)), "train")
    train.set_epoch(2)
    again.set_epoch(2)
    assert all(torch.equal(train[i][0], again[i][0]) for i in range(5))
    other = build_dataset(roots_cfg((a, 3), (b, 1), sets=["seed=1"]), "train")
    other.set_epoch(2)
    assert not all(torch.equal(train[i][0], other[i][0]) for i in range(5))
    valid = build_dataset(roots_cfg((a, 1), (b, 1)), "valid")
    assert len(valid) == 3 and not valid.fixed_length


def test_one_corpus_in_roots_gives_the_mixtures_of_root(tmp_path):
    a, _ = two_corpora(tmp_path)
    listed = build_dataset(roots_cfg((a, 2.5)), "train")
    plain = build_dataset(cfg_for("dynamic", a, "data.segment_s=0.25", "data.train_items=400"), "train")
    for ds in (listed, plain):
        ds.set_epoch(1)
    assert all(torch.equal(listed[i][1], plain[i][1]) for i in range(8))


def test_several_corpora_through_the_data_cache(tmp_path):
    a, b = two_corpora(tmp_path)
    cfg = roots_cfg((a, 1), (b, 1))
    made = build_dataset(cfg, "valid", cache=tmp_path / "cache")
    direct = build_dataset(cfg, "valid")
    assert all(torch.equal(made[i][1], direct[i][1]) for i in range(3))
    assert made.files["made"] >= 1


@pytest.mark.parametrize("value, field", [
    ("[{root: A, weight: 0}]", "data.roots[0].weight: must be > 0, got 0.0"),
    ("[{root: A, weight: 1}, {root: B, weight: -1}]", "data.roots[1].weight: must be > 0, got -1.0"),
    ("[{root: A, weight: .inf}]", "data.roots[0].weight: must be > 0, got inf"),
    ("[{root: A, weight: 1}, {weight: 1}]", "data.roots[1].root: is required"),
    ("[{root: A, wieght: 1}]", "data.roots[0].wieght: unknown field"),
    ("[]", "data.roots: needs at least one corpus"),
    ("[" + ", ".join(["{root: A}"] * 65) + "]", "data.roots (corpora): must be <= 64, got 65"),
])
def test_bad_roots_are_one_line_naming_the_field(tmp_path, value, field):
    a, b = tmp_path / "a", tmp_path / "b"
    with pytest.raises(ConfigError) as info:
        load_config(None, ["data.kind=dynamic", f"data.roots={value.replace('A', str(a)).replace('B', str(b))}"])
    assert field in str(info.value) and "\n" not in str(info.value)


def test_roots_are_for_dynamic_mixing_and_instead_of_root(tmp_path):
    with pytest.raises(ConfigError, match="data.roots: several corpora are for data.kind dynamic"):
        load_config(None, ["data.kind=librimix", f"data.roots=[{{root: {tmp_path}}}]"])
    with pytest.raises(ConfigError, match=r"data.roots: give data.root \(one corpus\) or data.roots"):
        load_config(None, ["data.kind=dynamic", f"data.root={tmp_path}", f"data.roots=[{{root: {tmp_path}}}]"])


def test_a_missing_corpus_folder_names_its_field_in_one_line(tmp_path, monkeypatch, capsys):
    from masksep import cli

    a, _ = two_corpora(tmp_path)
    with pytest.raises(UserError, match=rf"^data.roots\[1\].root: {tmp_path / 'nope'}: data folder not found$"):
        build_dataset(roots_cfg((a, 1), (tmp_path / "nope", 1)), "valid")
    monkeypatch.delenv("MASKSEP_NO_SUCH_VAR", raising=False)
    with pytest.raises(ConfigError, match=r"data.roots\[1\].root: environment variable \$MASKSEP_NO_SUCH_VAR"):
        build_dataset(roots_cfg((a, 1), ("$MASKSEP_NO_SUCH_VAR/x", 1)), "valid")
    config = tmp_path / "two.yaml"
    config.write_text(f"data:\n  kind: dynamic\n  roots:\n    - {{root: '{a}', weight: 1}}\n"
                      f"    - {{root: '{tmp_path / 'nope'}', weight: 1}}\n")
    assert cli.main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"masksep: error: data.roots[1].root: {tmp_path / 'nope'}: data folder not found"
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_data_kind_outside_the_registry_is_one_line_naming_the_field():
    with pytest.raises(ConfigError, match="data.kind"):
        load_config(None, ["data.kind=numpy", "data.root=/x"])
    cfg = load_config(None)
    cfg.data.kind = "numpy"  # a config that skipped validation
    with pytest.raises(ConfigError, match=r"^data\.kind: unknown name 'numpy' \(known: synthetic, "):
        build_dataset(cfg, "test")

# --------------------------------------------------------------------------- docs/extending.md


def _docs_data_example() -> tuple[str, str, str, str]:
    """(file text, import line, registry line, names line) of docs/extending.md's "Adding a data set"."""
    import re
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "extending.md").read_text()
    section = page.split("## Adding a data set", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 3, "the docs section should show the file, the registry and the name"
    reader_file, registry_edit, spec_edit = blocks
    assert reader_file.startswith("# masksep/data/filelist.py\n")
    assert registry_edit.startswith("# masksep/data/datasets.py\n")
    assert spec_edit.startswith("# masksep/data/spec.py\n")
    import_line = registry_edit.splitlines()[1]
    (entry,) = [line for line in registry_edit.splitlines() if "# the new line" in line]
    (names,) = [line for line in spec_edit.splitlines() if line.startswith("DATA_KINDS = ")]
    return reader_file, import_line, entry, names


def test_the_docs_data_set_example_is_one_file_a_registry_line_and_a_name(tmp_path):
    """docs/extending.md's example data set, added to a copy of the package exactly as
    the page says, is accepted by the config, read by build_dataset and trained on."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    reader_file, import_line, entry, names = _docs_data_example()
    package = tmp_path / "pkg" / "masksep"
    shutil.copytree(repo / "masksep", package, ignore=shutil.ignore_patterns("__pycache__"))
    (package / "data" / "filelist.py").write_text(reader_file)
    datasets = package / "data" / "datasets.py"
    text = datasets.read_text()
    anchors = ("from masksep.data import dynamic, librimix, spec, wsj0mix\n", '        "dynamic": _dynamic,\n')
    for anchor in anchors:
        assert text.count(anchor) == 1, f"datasets.py no longer has {anchor!r}"
    text = text.replace(anchors[0], f"{anchors[0]}{import_line}\n")
    text = text.replace(anchors[1], f"{anchors[1]}{entry}\n")
    datasets.write_text(text)
    spec = package / "data" / "spec.py"
    spec_text = spec.read_text()
    (old,) = [line for line in spec_text.splitlines() if line.startswith("DATA_KINDS = ")]
    spec.write_text(spec_text.replace(old, names))

    # A corpus in the example's layout: ROOT/{split}.csv, wav files beside it, mix = s1 + s2.
    corpus = tmp_path / "corpus"
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("valid", 2), ("test", 3)):
        (corpus / split).mkdir(parents=True)
        rows = ["id,mix,s1,s2"]
        for k in range(n):
            length = 4000 + 400 * k
            s1, s2 = (0.2 * rng.standard_normal(length) for _ in range(2))
            for name, x in (("s1", s1), ("s2", s2), ("mix", s1 + s2)):
                sf.write(corpus / split / f"{name}-{k}.wav", x, 8000, subtype="FLOAT")
            rows.append(f"{split}-{k},{split}/mix-{k}.wav,{split}/s1-{k}.wav,{split}/s2-{k}.wav")
        (corpus / f"{split}.csv").write_text("\n".join(rows) + "\n")

    script = """
import json, sys
import masksep
from masksep.config import load_config
from masksep.data import build_dataset
from masksep.train import fit
cfg = load_config(None, sys.argv[2:])
train, test = build_dataset(cfg, "train"), build_dataset(cfg, "test")
mix, src = test[2]
summary = fit(cfg, sys.argv[1])
print(json.dumps({"package": masksep.__file__, "sizes": [len(train), len(test)],
                  "crop": list(train[0][0].shape), "whole": [list(mix.shape), list(src.shape)],
                  "residual": float((mix - src.sum(0)).abs().max()), "name": test.item_name(2),
                  "epochs": summary["epochs"], "test_si_snri": summary["test_si_snri"]}))
"""
    sets = ["data.kind=filelist", f"data.root={corpus}", "data.segment_s=0.25",
            "encoder.n_filters=16", "backbone.tcn.bottleneck=8", "backbone.tcn.hidden=16",
            "backbone.tcn.layers=2", "backbone.tcn.repeats=1", "backbone.tcn.skip=8",
            "train.batch_size=4", "train.epochs=1", "train.threads=1", "data.num_workers=0"]
    env = {**os.environ, "PYTHONPATH": str(package.parent), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", script, str(tmp_path / "run"), *sets],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.splitlines()[-1])
    assert out["package"] == str(package / "__init__.py")  # the copy, not the checkout
    assert out["sizes"] == [8, 3]
    assert out["crop"] == [2000]  # training items: data.segment_s crops
    assert out["whole"] == [[4800], [2, 4800]]  # test items: whole utterances
    assert out["residual"] < 1e-5 and out["name"] == "test-2"
    assert out["epochs"] == 1 and np.isfinite(out["test_si_snri"])
    # And in this checkout, without the two edits, the name is refused.
    with pytest.raises(ConfigError, match="data.kind"):
        cfg_for("filelist", corpus)
