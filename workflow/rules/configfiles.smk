# Checks of the config files themselves, which the schema cannot see: a YAML syntax error in the
# workflow's own config file, and what merging a --configfile over it would silently lose.

import os
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(workflow.basedir).parent / "src"))
# The settings logic of the command line (plain Python: PyYAML and jsonschema, which Snakemake
# brings), so that the workflow reads config files and resolves runs exactly as `comm-repro`.
from comm_repro import config as settings  # noqa: E402

# Mappings whose keys are the things a study runs: an empty one cannot mean "the same as before".
COLLECTIONS = ("datasets", "methods", "experiments")


def check_yaml_syntax(path):
    """Snakemake reports a YAML error in a config file without naming the file or the line; this
    says both, for the workflow's own config file (read after the command line's --configfile
    files, whose errors Snakemake reports before the workflow starts)."""
    if not os.path.exists(path):
        return
    try:
        settings.load_yaml(path)
    except settings.ConfigError as err:
        raise WorkflowError(str(err)) from None


def check_configfiles():
    """Snakemake merges each --configfile (and --config) over config/config.yaml key by key, so
    an empty `methods:` or `datasets:` mapping there removes nothing: the study would run all
    the default ones. Refuse it, naming the file and the key."""
    if getattr(workflow.config_settings, "replace_workflow_config", False):
        return  # the files replace the workflow's config: the schema sees what they say
    sources = [
        ("--config", dict(getattr(workflow.config_settings, "config", None) or {}))
    ]
    for path in getattr(workflow, "overwrite_configfiles", None) or ():
        with open(path) as f:
            sources.append((str(path), yaml.safe_load(f)))
    for source, data in sources:
        if not isinstance(data, dict):
            continue
        for key in COLLECTIONS:
            if isinstance(data.get(key), dict) and not data[key]:
                raise WorkflowError(
                    f"{source}: {key} is an empty mapping. Snakemake merges --configfile and "
                    "--config over config/config.yaml key by key, so an empty mapping "
                    f"removes none of its {key} and the study would run them all. To run "
                    "fewer, give a complete study file with --replace-workflow-config, or ask "
                    "for the runs' files as targets"
                )
