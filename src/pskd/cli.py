"""The `pskd` command. A user's mistake becomes one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from pskd.errors import UserError
from pskd.limits import MAX_BENCH_REPEATS, MAX_BENCH_WARMUP


def _set_option(function):
    return click.option(
        "--set", "overrides", multiple=True, metavar="KEY=VALUE",
        help="Override a config value by its dotted key, e.g. --set train.epochs=20 (repeatable; a * in the key "
             "matches every key there: --set 'teachers.*.train.epochs=20').",
    )(function)


def _plugin_option(function):
    return click.option(
        "--plugin", "plugins", multiple=True, type=click.Path(path_type=Path), metavar="FILE",
        help="A plugin file the run was trained with (its model or dataset); loaded only when its SHA-256 is the "
             "one the run recorded (repeatable).",
    )(function)


def _load_run_plugins(model: Path, files: tuple[Path, ...]) -> None:
    """Import the plugin files a user named for the run or checkpoint at `model`, each checked against the
    digests it recorded; an exported model (.onnx, .tflite) needs none."""
    if not files or model.suffix.lower() in (".onnx", ".tflite"):
        return
    from pskd.deploy.student import checkpoint_path
    from pskd.models.checkpoint import read_checkpoint
    from pskd.plugins import load_named_plugins, recorded_plugins

    path = checkpoint_path(model)
    _, meta = read_checkpoint(path)
    load_named_plugins(list(files), recorded_plugins(meta, str(path)), str(model))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="pskd")
def cli() -> None:
    """Skeleton-to-accelerometer knowledge distillation for wearable action recognition."""


@cli.group()
def data() -> None:
    """Inspect and validate datasets."""


@data.command("check")
@click.argument("dataset", required=False)
@click.option("--config", "config_path", type=click.Path(path_type=Path),
              help="Take the dataset and its settings from this config's data section.")
@_set_option
@click.option("--data-dir", type=click.Path(path_type=Path), help="Dataset folder or data root [$PSKD_DATA_DIR].")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object (every problem in it).")
def data_check(dataset: str | None, config_path: Path | None, overrides: tuple[str, ...], data_dir: Path | None,
               as_json: bool) -> None:
    """Validate a copy of DATASET and summarise it (clips, classes, subjects, lengths, rates, missing). The
    dataset's settings come from --config and --set, e.g. --set data.folder.on_problem=skip."""
    from pskd.data.check import check_dataset, summary_lines
    from pskd.data.folder import ManifestError

    config = _data_config(dataset, config_path, overrides, data_dir)
    try:
        summary = check_dataset(config.data)
    except ManifestError as err:
        for problem in err.problems:  # every problem, with its row; then the one-line error
            click.echo(f"  {problem}", err=True)
        raise
    refusal = summary.pop("refusal", None)
    if as_json:
        click.echo(json.dumps(summary))
    else:
        for line in summary_lines(summary):
            click.echo(line, err=refusal is not None)
    if refusal is not None:
        raise UserError(refusal)


@data.command("diagnose")
@click.argument("config_path", metavar="CONFIG", type=click.Path(path_type=Path))
@_set_option
@click.option("--data-dir", type=click.Path(path_type=Path), help="Shorthand for --set data.data_dir=DIR.")
@click.option("--folds", type=click.IntRange(2, 20), default=4, show_default=True,
              help="Folds over the training subjects.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object.")
def data_diagnose(config_path: Path, overrides: tuple[str, ...], data_dir: Path | None, folds: int,
                  as_json: bool) -> None:
    """Will the camera help the watch? Small probes on the training subjects of CONFIG's data (minutes): per class,
    the camera side's accuracy, the watch's, and how much of the difference the watch signal can carry."""
    from pskd.config import load_config
    from pskd.training.diagnose import diagnose, table_lines

    overrides = (*overrides, *((f"data.data_dir={data_dir}",) if data_dir is not None else ()))
    config = load_config(config_path, overrides)
    found = diagnose(config, log=lambda text: click.echo(text, err=True), folds=folds)
    if as_json:
        click.echo(json.dumps(found))
        return
    for line in table_lines(found):
        click.echo(line)


def _data_config(dataset: str | None, config_path: Path | None, overrides: tuple[str, ...], data_dir: Path | None):
    """The config whose data section `data check` reads: CONFIG's, or the defaults, with DATASET and --set."""
    from pskd.config import build_config, load_config
    from pskd.plugins import load_plugins

    if dataset is None and config_path is None:
        raise UserError("data check needs a DATASET (or --config CONFIG)")
    overrides = (*((f"data.dataset={dataset}",) if dataset else ()), *overrides,
                 *((f"data.data_dir={data_dir}",) if data_dir is not None else ()))
    config = load_config(config_path, overrides) if config_path else build_config({}, overrides, source="data check")
    load_plugins(config.plugins)
    config.data.resolve_sections()
    return config


@cli.group("config")
def config_group() -> None:
    """Inspect configs."""


@config_group.command("show")
@click.argument("config_path", metavar="CONFIG", type=click.Path(path_type=Path))
@_set_option
@click.option("--data-dir", type=click.Path(path_type=Path), help="Shorthand for --set data.data_dir=DIR.")
def config_show(config_path: Path, overrides: tuple[str, ...], data_dir: Path | None) -> None:
    """Print CONFIG fully resolved (its _base_ files, --set overrides and every default) as the YAML a run's
    config.yaml would hold; names (method, models, dataset, protocol, terms) checked, plugins loaded."""
    from pskd.config import dump_config, load_config
    from pskd.pipeline import check_names

    overrides = (*overrides, *((f"data.data_dir={data_dir}",) if data_dir is not None else ()))
    config = load_config(config_path, overrides)
    check_names(config, for_run=False)
    click.echo(dump_config(config), nl=False)


@cli.command()
@click.argument("dataset")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Data root to download into [$PSKD_DATA_DIR].")
@click.option("--url", help="Base URL of the archives (a mirror) [$PSKD_<DATASET>_URL].")
@click.option("--sha256", "digests", multiple=True, metavar="NAME=HEX", help="Expected SHA-256 of an archive.")
@click.option("--manifest", type=click.Path(path_type=Path, dir_okay=False),
              help="Per-file SHA-256 list ('<hex>  ./<path>' lines) replacing the one shipped with pskd.")
@click.option("--keep-archives", is_flag=True, help="Keep the downloaded archives under DATA_DIR/.downloads.")
def download(dataset: str, data_dir: Path | None, url: str | None, digests: tuple[str, ...], manifest: Path | None,
             keep_archives: bool) -> None:
    """Download DATASET's official archives, verify their SHA-256 and extract them safely."""
    from tqdm import tqdm

    from pskd.data.download import download as fetch_dataset
    from pskd.data.registry import resolve_data_dir

    expected = {}
    for item in digests:
        name, sep, value = item.partition("=")
        if not sep or len(value) != 64 or any(c not in "0123456789abcdefABCDEF" for c in value):
            raise UserError(f"--sha256 {item}: expected NAME=<64 hex digits>")
        expected[name] = value
    if manifest is not None and not manifest.is_file():
        raise UserError(f"{manifest}: manifest not found")
    bars: dict[str, tqdm] = {}

    def progress(name: str, done: int, total: int | None) -> None:
        bar = bars.get(name) or bars.setdefault(name, tqdm(total=total, unit="B", unit_scale=True, desc=name,
                                                            leave=False, disable=None))
        bar.update(done - bar.n)

    try:
        target = fetch_dataset(dataset, resolve_data_dir(dataset, data_dir), url, expected, manifest, keep_archives,
                               log=lambda text: click.echo(text, err=True), progress=progress)
    finally:
        for bar in bars.values():
            bar.close()
    click.echo(f"{dataset}: ready at {target} (check it with: pskd data check {dataset} --data-dir {target})")


def _launch(nproc: int) -> None:
    """Run this very command again under torchrun with nproc processes (without --nproc)."""
    import subprocess

    args, skip = [], False
    for arg in _ARGV:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            args.append(arg)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "pskd", *args]
    done = subprocess.run(command)
    if done.returncode:
        raise UserError(f"the {nproc} training processes failed (exit code {done.returncode}); see above")


def _train(config, out: Path | None, quiet: bool, resume: bool = False, overwrite: bool = False,
           command: str = "train", config_path: Path | None = None) -> Path:
    from pskd.overwrite import reads
    from pskd.pipeline import run
    from pskd.training import distributed

    if quiet:
        config.progress = False
    try:
        run_dir, metrics = run(config, out, resume=resume, overwrite=overwrite, command=command,
                               inputs=reads((config_path, "the config file")))
        main_rank = distributed.is_main()
    finally:
        distributed.shutdown()
    if not main_rank:
        return run_dir
    student = metrics["student"]
    click.echo(
        f"{metrics['method']} student on {metrics['dataset']} {metrics['protocol']} (seed {metrics['seed']}): "
        f"test accuracy {100 * student['test']['accuracy']:.2f} %, macro-F1 {100 * student['test']['macro_f1']:.2f} % "
        f"(best-on-validation epoch {student['best_epoch']}); last epoch {100 * student['test_last']['accuracy']:.2f} %; "
        f"{metrics['wall_time_s']:.1f} s"
    )
    click.echo(f"run directory: {run_dir}")
    return run_dir


@cli.command()
@click.argument("config_path", metavar="[CONFIG]", required=False, type=click.Path(path_type=Path))
@_set_option
@click.option("--out", type=click.Path(path_type=Path), help="Run directory (default: runs/<name>-...-<time>).")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Shorthand for --set data.data_dir=DIR.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--resume", "resume_dir", type=click.Path(path_type=Path),
              help="Continue a killed run from its last checkpoint (CONFIG may be left out: the run's own is used).")
@click.option("--nproc", type=click.IntRange(1), default=1, show_default=True,
              help="Processes on this machine (DistributedDataParallel: one per GPU, or gloo on CPU cores).")
@click.option("--overwrite", is_flag=True, help="Replace a run (finished or interrupted) already at --out.")
def train(config_path: Path | None, overrides: tuple[str, ...], out: Path | None, data_dir: Path | None, quiet: bool,
          resume_dir: Path | None, nproc: int, overwrite: bool) -> None:
    """Train and evaluate what CONFIG describes; write a run directory."""
    from pskd.config import load_config
    from pskd.pipeline import check_names
    from pskd.rundir import INCOMPLETE

    if nproc > 1:
        if config_path is not None:
            check_names(load_config(config_path, overrides))  # a mistake is reported once, here, not by N ranks
        _launch(nproc)
        return

    if data_dir is not None:
        overrides = overrides + (f"data.data_dir={data_dir}",)
    if resume_dir is not None:
        if out is not None or overwrite:
            raise UserError("--resume continues the run where it is; leave out --out and --overwrite")
        resume_dir = Path(str(resume_dir).removesuffix("/").removesuffix(INCOMPLETE))
        if config_path is None:
            config_path = resume_dir.with_name(resume_dir.name + INCOMPLETE) / "config.yaml"
            if not config_path.is_file():
                raise UserError(f"{resume_dir}: no interrupted run here (expected {config_path})")
        config = load_config(config_path, overrides)
        if config.plugins and config_path.parent == resume_dir.with_name(resume_dir.name + INCOMPLETE):
            # a run folder may come from anyone: the code its config names runs only from a config the user gives
            raise UserError(f"{config_path}: names plugins ({', '.join(str(p) for p in config.plugins)[:200]}); a "
                            f"run folder's own config does not run code: give the config you trust, "
                            f"pskd train CONFIG --resume {resume_dir}")
    elif config_path is None:
        raise UserError("train needs a CONFIG (or --resume RUN_DIR)")
    _train(load_config(config_path, overrides), resume_dir or out, quiet, resume=resume_dir is not None,
           overwrite=overwrite, config_path=config_path)


@cli.command()
@_set_option
@click.option("--out", type=click.Path(path_type=Path), help="Run directory (default: runs/demo-...-<time>).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--overwrite", is_flag=True, help="Replace a run already at --out.")
def demo(overrides: tuple[str, ...], out: Path | None, quiet: bool, overwrite: bool) -> None:
    """Run the whole pipeline on the embedded synthetic dataset (no download; a few minutes on 2 cores)."""
    from pskd.config import build_config
    from pskd.demo import DEMO_CONFIG

    config = build_config(DEMO_CONFIG, overrides, source="demo config")
    run_dir = _train(config, out, quiet, overwrite=overwrite, command="demo")
    click.echo("")
    click.echo((run_dir / "report.md").read_text(encoding="utf-8"))


def parse_seeds(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--seeds {text}: expected a count N or a comma-separated list of integers") from None
    if not values or (len(values) == 1 and "," not in text and values[0] < 1):
        raise UserError(f"--seeds {text}: expected a count N >= 1 or a comma-separated list of integers")
    seeds = list(range(values[0])) if len(values) == 1 and "," not in text else values
    if len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds {text}: a seed is repeated")
    return seeds


@cli.command()
@click.argument("config_path", metavar="CONFIG", type=click.Path(path_type=Path))
@click.option("--methods", default="ce,kd,dkd,takd,avg_kd,camkd,dask,pskd", show_default=True,
              help="Comma-separated methods to compare.")
@click.option("--seeds", default="5", show_default=True,
              help="N for seeds 0..N-1, or a comma-separated list of seeds (e.g. 3,4 to run part of a sweep elsewhere).")
@click.option("--ablation", is_flag=True, help="Add PSKD's ablation variants.")
@click.option("--grid", "grid_items", multiple=True, metavar="KEY=V1,V2",
              help="Also vary a config value over these values (repeatable: every combination is run; split at "
                   "commas outside brackets and quotes, so [0,1],[0,1,2] is two lists).")
@click.option("--jobs", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Processes training independent runs at once (each on one thread; figures do not change).")
@_set_option
@click.option("--out", type=click.Path(path_type=Path), help="Folder for the runs and results (default: runs/sweep-...).")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Shorthand for --set data.data_dir=DIR.")
@click.option("--teachers-from", type=click.Path(path_type=Path),
              help="An earlier sweep's folder: runs whose teachers it trained load them instead of training them.")
@click.option("--resume", is_flag=True,
              help="Continue the interrupted sweep in --out (same config, methods, seeds and grid): finished runs "
                   "are kept, interrupted ones continue from their checkpoints.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def sweep(config_path: Path, methods: str, seeds: str, ablation: bool, grid_items: tuple[str, ...], jobs: int,
          overrides: tuple[str, ...], out: Path | None, data_dir: Path | None, teachers_from: Path | None,
          resume: bool, quiet: bool) -> None:
    """Compare methods over seeds (and grid points) with shared teachers; write results.md, results.json and,
    with ce among the methods, gain_map.png."""
    import time

    from pskd.config import load_config
    from pskd.sweep import parse_grid, results_table
    from pskd.sweep import sweep as run_sweep

    if data_dir is not None:
        overrides = overrides + (f"data.data_dir={data_dir}",)
    if quiet:
        overrides = overrides + ("progress=false",)
    if resume and out is None:
        raise UserError("--resume: name the interrupted sweep's folder with --out")
    base = load_config(config_path, overrides)
    out = out or Path("runs") / f"sweep-{base.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    names = [m.strip() for m in methods.split(",") if m.strip()]
    grid = parse_grid(grid_items)
    results = run_sweep(base, names, parse_seeds(seeds), out, ablation, grid=grid, jobs=jobs,
                        teachers_from=teachers_from, resume=resume)
    click.echo(results_table(results))
    click.echo(f"results: {out / 'results.md'}")


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--format", "fmt", default="onnx", show_default=True, type=click.Choice(["onnx", "tflite"]),
              help="ONNX (ONNX Runtime) or LiteRT / TensorFlow Lite (Wear OS, microcontrollers; the litert extra).")
@click.option("--int8", is_flag=True, help="Also write an int8-quantised model (static, calibrated on training clips).")
@click.option("--out", type=click.Path(path_type=Path), help="The fp32 model file (default: RUN_DIR/export/student.FORMAT).")
@click.option("--atol", default=1e-4, show_default=True, type=click.FloatRange(min=0.0),
              help="Largest allowed logit difference from PyTorch (relative to the largest logit when above 1).")
@click.option("--max-int8-drop", default=0.02, show_default=True, type=click.FloatRange(min=0.0),
              help="Largest allowed int8 accuracy loss against fp32 (a fraction).")
@click.option("--overwrite", is_flag=True, help="Replace model files already there.")
@_plugin_option
def export(run_dir: Path, fmt: str, int8: bool, out: Path | None, atol: float, max_int8_drop: float,
           overwrite: bool, plugins: tuple[Path, ...]) -> None:
    """Export a run's student, check it against PyTorch on the test clips, report each form's accuracy."""
    from pskd.deploy.export import export_run

    _load_run_plugins(run_dir, plugins)
    report = export_run(run_dir, out, int8, atol, max_int8_drop, overwrite=overwrite, fmt=fmt)
    click.echo(f"PyTorch     test accuracy {100 * report['pytorch']['accuracy']:.2f} % ({report['test_clips']} clips)")
    fp32, name = report[f"{fmt}_fp32"], {"onnx": "ONNX", "tflite": "LiteRT"}[fmt]
    click.echo(f"{name} fp32 test accuracy {100 * fp32['accuracy']:.2f} %, max logit difference "
               f"{fp32['max_abs_logit_difference']:.2g}, {fp32['size_bytes'] / 1e3:,.1f} kB: {fp32['path']}")
    if f"{fmt}_int8" in report:
        q = report[f"{fmt}_int8"]
        click.echo(f"{name} int8 test accuracy {100 * q['accuracy']:.2f} % ({0.0 - 100 * q['accuracy_drop']:+.2f} points "
                   f"against fp32), agrees with fp32 on {100 * q['agreement_with_fp32']:.1f} %, "
                   f"{q['size_bytes'] / 1e3:,.1f} kB: {q['path']}")


@cli.command()
@click.argument("model_path", metavar="MODEL", type=click.Path(path_type=Path))
@click.option("--dataset", help="Shorthand for --set data.dataset=NAME (default: the run's own, or utd_mhad).")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Shorthand for --set data.data_dir=DIR.")
@click.option("--protocol", help="Shorthand for --set data.protocol=NAME.")
@click.option("--split", "split_name", default="test", show_default=True, type=click.Choice(["test", "val", "all"]))
@_set_option
@click.option("--out", type=click.Path(path_type=Path), help="Folder for the figures (default: runs/evaluate-...).")
@click.option("--overwrite", is_flag=True, help="Replace a folder already at --out.")
@_plugin_option
def evaluate(model_path: Path, dataset: str | None, data_dir: Path | None, protocol: str | None, split_name: str,
             overrides: tuple[str, ...], out: Path | None, overwrite: bool, plugins: tuple[Path, ...]) -> None:
    """Evaluate MODEL (a run directory, .pt checkpoint or .onnx file) on a dataset's split: metrics.json,
    report.md, confusion_matrix.png and predictions.csv."""
    import time

    from pskd.deploy.evaluate import evaluate_model

    _load_run_plugins(model_path, plugins)
    named = {"data.dataset": dataset, "data.data_dir": data_dir, "data.protocol": protocol}
    overrides = [*overrides, *(f"{key}={value}" for key, value in named.items() if value is not None)]
    out = out or Path("runs") / f"evaluate-{model_path.stem}-{split_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    metrics = evaluate_model(model_path, split_name, out, overrides, overwrite)
    figures = metrics["test"]
    click.echo(f"{metrics['dataset']} {metrics['protocol']} {split_name}: {figures['clips']} clips, accuracy "
               f"{100 * figures['accuracy']:.2f} %, macro-F1 {100 * figures['macro_f1']:.2f} %")
    click.echo(f"figures: {out}")


@cli.command()
@click.argument("targets", metavar="RUN_DIR|MODEL...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "json_path", type=click.Path(path_type=Path),
              help="Also write the figures here (one run: its bench.json; several: {runs, ratios, files}).")
@click.option("--repeats", default=300, show_default=True, type=click.IntRange(5, MAX_BENCH_REPEATS),
              help="Timed runs per runtime.")
@click.option("--warmup", default=20, show_default=True, type=click.IntRange(0, MAX_BENCH_WARMUP),
              help="Untimed runs first.")
@click.option("--max-seconds", default=10.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Stop timing a runtime after this long (large models).")
@_plugin_option
def bench(targets: tuple[Path, ...], json_path: Path | None, repeats: int, warmup: int, max_seconds: float,
          plugins: tuple[Path, ...]) -> None:
    """Parameters, FLOPs, file sizes and batch-1 one-thread latency of each run's student, side by side (or of
    exported .onnx / .tflite files)."""
    from pskd.deploy.bench import bench_file, bench_run, check_json, check_target, file_table, ratios, table

    for target in targets:
        check_target(target)
    if json_path is not None:
        check_json(json_path, list(targets))
    for target in targets:
        if target.is_dir():
            _load_run_plugins(target, plugins)
    runs = [bench_run(t, warmup, repeats, max_seconds) for t in targets if t.is_dir()]
    files = [bench_file(t, warmup, repeats, max_seconds) for t in targets if not t.is_dir()]
    for results, show in ((runs, table), (files, file_table)):
        if results:
            click.echo(show(results))
    if json_path is not None:
        payload = runs[0] if len(runs) == 1 and not files else {"runs": runs, "ratios": ratios(runs) if runs else [],
                                                                  "files": files}
        from pskd.fileio import write_file

        write_file(json_path, json.dumps(payload, indent=2))


@cli.command()
@click.argument("model_path", metavar="MODEL", type=click.Path(path_type=Path))
@click.option("--input", "input_path", required=True, metavar="FILE|-",
              help="Accelerometer samples: CSV (header optional; a time column is used) or .npy [samples, channels]; "
                   "'-' reads CSV lines from standard input as they arrive.")
@click.option("--rate", type=float, help="Sampling rate in Hz (default: from a time column, else the model's).")
@click.option("--units", type=click.Choice(["g", "m/s2"]), help="Unit of the recording (default: the model's).")
@click.option("--window", type=float, help="Window length in seconds (default: the model's clip duration).")
@click.option("--hop", default=0.5, show_default=True, type=float, help="Seconds between window starts.")
@click.option("--smooth", "smooth_windows", type=int, help="Windows averaged, odd (default: half a window's worth).")
@click.option("--min-segment", type=float, help="A label must last this long to start a segment (default: half a "
                                                "window).")
@click.option("--out", type=click.Path(path_type=Path),
              help="Per-window labels and probabilities (.csv or .jsonl; '-' prints JSON lines on stdout at once).")
@click.option("--segments", "segments_path", type=click.Path(path_type=Path),
              help="Segments (.csv or .jsonl; '-' for stdout), each written when it ends.")
@click.option("--plot", type=click.Path(path_type=Path), help="A timeline picture (.png).")
@click.option("--truth", type=click.Path(path_type=Path),
              help="True segments (.csv or .jsonl: label, start_s, end_s): drawn, and the time recognised right.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1, 256))
@_plugin_option
def predict(model_path: Path, input_path: str, rate: float | None, units: str | None, window: float | None,
            hop: float, smooth_windows: int | None, min_segment: float | None, out: Path | None,
            segments_path: Path | None, plot: Path | None, truth: Path | None, threads: int,
            plugins: tuple[Path, ...]) -> None:
    """Recognise actions in a recording or a live stream with MODEL (.onnx, .tflite, a run directory or a .pt)."""
    from pskd.deploy.predict import Outputs, predict_stream
    from pskd.deploy.stream import Settings

    _load_run_plugins(model_path, plugins)
    predict_stream(model_path, input_path, Settings(rate, window, hop, smooth_windows, min_segment),
                   Outputs(out, segments_path, plot, truth), units, threads, echo=click.echo)


_ARGV: list[str] = []  # the command line main() was given (--nproc runs it again under torchrun)


def main(argv: list[str] | None = None) -> None:
    global _ARGV
    _ARGV = list(sys.argv[1:] if argv is None else argv)
    try:
        cli.main(args=argv, prog_name="pskd", standalone_mode=False)
    except UserError as err:
        click.echo(f"pskd: error: {err}", err=True)
        sys.exit(err.exit_code)
    except click.exceptions.Abort:
        click.echo("pskd: aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("pskd: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)


if __name__ == "__main__":
    main()
