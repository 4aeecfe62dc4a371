"""``hf-transfer-seg report``: did the score predict downstream Dice? (from revision cards or a CSV table)."""

from __future__ import annotations

import argparse

from hf_transfer_seg.cli import argtypes as T


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="correlate robustness scores (and other predictors) with downstream Dice; selection rules; plots",
        description=(
            "Read every checkpoint revision's card (robustness scores, downstream Dice, ImageNet top-1, LogME, "
            "linear-probe Dice) or a CSV table (columns series, epoch, dice + one numeric column per predictor) and "
            "write DIR/report.json, DIR/report.md and plots: per-series Spearman/Kendall, the fraction of series with "
            "the declared sign, one headline predictor tested in advance (others exploratory, Holm-corrected), a "
            "minimum-evidence gate, epoch-controlled partial correlations, seed noise, and checkpoint selection rules "
            "(online vs hindsight, honest epochs saved, fixed-fraction/last/oracle baselines; leave-one-group-out with "
            "--group-by). Directions are never guessed: the tool's own columns (robustness:*, logme, linear_probe_dice, "
            "top1, epoch) have known ones; declare any other with --lower-is-better/--higher-is-better."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--repo-id", action="append", help="model repo(s) with checkpoint revisions; repeat for several series")
    src.add_argument("--table", help="CSV with columns series, epoch, dice and predictor columns")
    src.add_argument("--results-repo", help="dataset repo written by `rank` (models instead of checkpoints; Dice from results.csv or the models' cards)")
    p.add_argument("--target", default=None, help="target key whose scores and Dice are read from the cards (e.g. mni152-tissue, local:data/drive-train)")
    p.add_argument("--score-target", default=None, help="target key of the robustness scores, when they were computed on other images (default: --target)")
    p.add_argument("--frozen", action="store_true", help="use the frozen-encoder Dice from the cards")
    p.add_argument("--revisions", default="all", help="'all' or a comma list of revisions (cards mode)")
    p.add_argument("--output", required=True, help="folder for report.json, report.md, table.csv and the plots")
    p.add_argument("--predictor", default=None, help="predictor shown in the plots (default: the headline)")
    p.add_argument("--headline", default="robustness:cosine_m0.5_L-1_flat",
                   help="the one predictor declared in advance (tested alone); every other one is exploratory")
    p.add_argument("--lower-is-better", nargs="+", default=[], metavar="COL", help="predictor columns where lower is better (commas also split)")
    p.add_argument("--higher-is-better", nargs="+", default=[], metavar="COL", help="predictor columns where higher is better (commas also split)")
    p.add_argument("--group-by", default=None, metavar="COL",
                   help="a per-series column (e.g. dataset, model): tune rule parameters leave-one-group-out and report out-of-sample figures")
    p.add_argument("--cluster-by", default=None, metavar="COLS",
                   help="per-series column(s), comma-separated, naming the independent unit (tests and intervals run over these "
                        "clusters); default: the pretraining runs: a pretraining_run column, else inferred from top-1 (and "
                        "--pretraining-columns) being identical across a run's series at every epoch, else "
                        "model/encoder/pretraining_scheme together (said so), else each series; 'none' for each series")
    p.add_argument("--pretraining-columns", nargs="+", default=[], metavar="COL",
                   help="pretraining-side columns (identical across the series of one run at every epoch) to find the runs from, "
                        "besides a top-1 column (commas also split)")
    p.add_argument("--min-effect", type=T.finite_float(0.0, 1.0), default=0.3, help="declared floor: mean |Spearman| for 'tracks', |epoch-controlled effect| for 'predicts', and the margin "
                        "an equivalence test must exclude for 'does not predict'")
    p.add_argument("--max-rule-predictors", type=T.bounded_int(0, 100_000), default=50,
                   help="selection rules for at most this many declared predictors (headline and top-1 first; the rest get correlations only)")
    p.add_argument("--tolerance", type=T.finite_float(0.0, 1.0), default=0.05, help="'within tolerance' rule: fraction of the series' score range")
    p.add_argument("--patience", type=T.bounded_int(1, 1_000_000), default=2, help="'patience' rule: checkpoints without improvement before stopping")
    p.add_argument("--bootstrap", type=T.bounded_int(0, 100_000), default=2000, help="bootstrap resamples (over clusters, see --cluster-by) for intervals")
    p.add_argument("--seed", type=T.bounded_int(0, T.MAX_SEED), default=0, help="bootstrap seed")
    p.add_argument("--max-loss", type=T.finite_float(0.0), default=None, metavar="POINTS",
                   help="tune stopping rules for the most epochs saved with mean Dice lost vs last <= POINTS (the table's Dice "
                        "units), out of sample (--group-by folds, else one pretraining run held out at a time); default: least loss")
    p.add_argument("--no-plots", action="store_true", help="skip the plots (and matplotlib's import): the fastest report")
    p.set_defaults(func=run)


def _names(values) -> list[str]:
    if isinstance(values, str):
        values = [values]
    return [s.strip() for v in values or [] for s in v.split(",") if s.strip()]


def run(args: argparse.Namespace) -> int:
    from hf_transfer_seg.errors import ConfigError
    from hf_transfer_seg.report.table import load_csv, table_from_cards
    from hf_transfer_seg.report.write import write_report

    lower = _names(args.lower_is_better)
    if args.table:
        df = load_csv(args.table)
        source = f"table {args.table}"
    elif args.results_repo:
        from hf_transfer_seg.report.results import load_results_table

        df, directions, sha = load_results_table(args.results_repo, args.target, frozen=args.frozen)
        lower += [p for p in directions if p not in _names(args.higher_is_better)]
        source = f"results repo {args.results_repo}@{sha} ({len(df)} models{', target ' + args.target if args.target else ''})"
    else:
        if not args.target:
            raise ConfigError("--target is required with --repo-id: the key of the target whose Dice and scores to read")
        df = table_from_cards(args.repo_id, args.target, frozen=args.frozen, revisions=args.revisions, score_key=args.score_target)
        source = f"cards of {', '.join(args.repo_id)} (target {args.target}{', frozen encoder' if args.frozen else ''})"
    cluster_by = None if args.cluster_by is None else ["none"] if args.cluster_by.strip().lower() == "none" else _names(args.cluster_by)
    declared = _names(args.lower_is_better) + _names(args.higher_is_better) + ([args.group_by] if args.group_by else [])
    missing = [n for n in declared if n not in df.columns]
    if missing:
        raise ConfigError(f"{', '.join(missing)} named in --lower-is-better/--higher-is-better/--group-by but not a column of "
                          f"the table; its columns are: {', '.join(map(str, df.columns))}")
    report = write_report(
        df, args.output, source=source, predictor=args.predictor, lower=lower,
        higher=_names(args.higher_is_better), headline=args.headline, group_by=args.group_by, tolerance=args.tolerance,
        patience=args.patience, n_boot=args.bootstrap, seed=args.seed, cluster_by=cluster_by, pretraining_columns=_names(args.pretraining_columns) or None,
        min_effect=args.min_effect,
        max_rule_predictors=args.max_rule_predictors, mode="ranking" if args.results_repo else "checkpoints",
        max_loss=args.max_loss, plots=not args.no_plots,
    )
    print(f"wrote {args.output}/report.md and report.json ({report['n_series']} series, {report['n_rows']} {'models' if args.results_repo else 'checkpoints'} with Dice)")
    if report["undeclared"]:
        print(f"  {len(report['undeclared'])} predictor(s) have no declared direction (correlations only); "
              "declare them with --lower-is-better/--higher-is-better")
    from hf_transfer_seg.report.markdown import verdict_counts

    print("  verdicts: " + verdict_counts(report["predictors"]))
    if report.get("table_csv_skipped"):
        print(f"  table.csv: {report['table_csv_skipped']}")
    trivial = report.get("trivial_baseline") or {}
    if trivial.get("warning"):
        print(f"  warning: {trivial['warning']}")
    for warning in report.get("warnings", [])[:5]:
        print(f"  warning: {warning}")
    print("  " + report["headline_sentence"])
    if report.get("stopping_sentence"):
        print("  " + report["stopping_sentence"])
    return 0
