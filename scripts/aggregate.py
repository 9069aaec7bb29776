"""Aggregate the runs of a config into <results_dir>/summary/ (tables, figures, README).

As a Snakemake job (rules aggregate and aggregate_partial) it takes the plan (`params.plan`, tokenfair.plan),
`params.partial` and its threads (worker processes) from the `snakemake` object. From the command line it aggregates a config
directly, e.g. while a grid is still running in another Snakemake process:

    python scripts/aggregate.py --configfile config.yaml --partial --workers 2
"""

import argparse

from tokenfair import config as tfconfig
from tokenfair import plan as tfplan
from tokenfair.aggregate import aggregate
from tokenfair.io import job_log


def _report(res, logger):
    s = res["seconds"]
    logger.info("%d runs aggregated in %.1f s (reading and reducing the runs %.1f s, tables %.1f s)",
                len(res["runs"]), s["total"], s["collect"], s["tables"] - s["collect"])


def main():
    if "snakemake" in globals():
        smk = globals()["snakemake"]
        with job_log(smk.log[0]) as logger:
            plan = tfplan.from_dict(smk.params.plan)
            _report(aggregate(plan, partial=bool(smk.params.partial), workers=smk.threads), logger)
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configfile", default="config.yaml")
    ap.add_argument("--partial", action="store_true",
                    help="aggregate the runs that exist into summary/partial/ and list the missing grid points")
    ap.add_argument("--workers", type=int, default=1, help="processes reading runs (each holds one run)")
    args = ap.parse_args()
    with job_log(None) as logger:
        plan = tfplan.build(tfconfig.load(args.configfile))
        _report(aggregate(plan, partial=args.partial, workers=args.workers), logger)


# The guard matters: worker processes are spawned, and a spawned process imports this file as __mp_main__.
if __name__ == "__main__":
    main()
