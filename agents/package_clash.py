"""Stop early when another installed distribution also provides the top-level package ``agents``.

lmrl-gym keeps its agent library in the top-level package ``agents``, and so does the OpenAI Agents SDK
(distribution ``openai-agents``). pip installs both into the same ``site-packages/agents`` folder, where
each overwrites the other's files: whichever was installed last owns ``agents/__init__.py``, the rest is a
mix, and the failures that follow (a missing module, a wrong class) point nowhere near the cause. This
module turns that into one clear error at ``import agents`` and in the ``lmrl-gym`` command line.

Only our own code can raise it, so it fires when our ``agents/__init__.py`` is the one imported; when the
other distribution's ``__init__.py`` won, Python never runs ours.
"""

from __future__ import annotations

import functools
import re
from importlib import metadata

PACKAGE = "agents"
OWN_DISTRIBUTION = "lmrl-gym"
# Distributions known to ship a top-level ``agents``, matched by name so that an editable install of one
# (whose RECORD lists only a .pth file and a finder, not the package) is caught too.
KNOWN_CLASHES = ("openai-agents",)


class PackageClashError(ImportError):
    """Another installed distribution provides the top-level package ``agents`` too."""


def normalize_name(name: str) -> str:
    """A distribution name as PEP 503 compares them: ``OpenAI_Agents`` and ``openai-agents`` are one."""
    return re.sub(r"[-_.]+", "-", name).lower()


def provides_package(dist: metadata.Distribution, package: str = PACKAGE) -> bool:
    """Whether ``dist`` installs the top-level package (or module) ``package``.

    Reads ``top_level.txt`` where the build wrote one (setuptools), else the ``RECORD`` of installed files
    (hatchling, flit, poetry and others write no ``top_level.txt``; ``openai-agents`` is built with
    hatchling). Both are read as text: parsing every RECORD into paths would cost tens of milliseconds on
    an environment with torch, for every ``import agents``.
    """
    top_level = dist.read_text("top_level.txt")
    if top_level is not None:
        return package in top_level.split()
    record = dist.read_text("RECORD")
    if record is not None:
        return any(
            record.startswith(prefix) or f"\n{prefix}" in record
            for prefix in (f"{package}/", f"{package}.py,")
        )
    # Old egg-info installs list their files elsewhere; ``files`` knows where.
    return any(path.parts and path.parts[0] in (package, f"{package}.py") for path in dist.files or ())


def clashing_distributions(path: list[str] | None = None) -> list[str]:
    """Names of the installed distributions other than lmrl-gym that provide the package ``agents``.

    Our own distribution is skipped by name, so an editable install of lmrl-gym (whose ``top_level.txt``
    says ``agents``) and the ``lmrl_gym.egg-info`` folder of a source checkout do not count.

    :param path: the folders to search (default: ``sys.path``, as ``importlib.metadata`` does).
    :return: sorted normalised names, e.g. ``["openai-agents"]``; empty when there is no clash.
    """
    search = {} if path is None else {"path": path}
    found = set()
    for dist in metadata.distributions(**search):
        # METADATA is parsed only for the rare distribution that provides ``agents``: parsing every one
        # would be the most expensive part of the scan.
        if provides_package(dist):
            name = dist.metadata["Name"]
            if name is None:  # a broken install without METADATA still clashes
                found.add(f"an unnamed distribution in {dist.locate_file('')}")
            elif normalize_name(name) != OWN_DISTRIBUTION:
                found.add(normalize_name(name))
    # An editable install lists no package files in its RECORD (only a .pth file and a finder), so the
    # known clashes are also looked up by name; the lookup matches folder names and parses nothing.
    for name in KNOWN_CLASHES:
        if next(iter(metadata.distributions(name=name, **search)), None) is not None:
            found.add(name)
    return sorted(found)


def clash_message(names: list[str]) -> str:
    """The error text for the clashing distributions ``names``."""
    others = " and ".join(names)
    return (
        f"{OWN_DISTRIBUTION} and {others} both install the top-level package `{PACKAGE}`: in one environment "
        f"their files overwrite each other and `import {PACKAGE}` gets a mix of the two. Use separate virtual "
        f"environments: uninstall {others} from this one (then `pip install --force-reinstall "
        f"{OWN_DISTRIBUTION}` unless it is an editable install, since the uninstall removes shared files) "
        "and install it in a virtual environment of its own."
    )


@functools.cache
def check_package_clash() -> None:
    """Raise :class:`PackageClashError` if another installed distribution provides ``agents``.

    One scan of the installed distributions per process (about a millisecond; cached, so ``import agents``
    and the command line share it).
    """
    names = clashing_distributions()
    if names:
        raise PackageClashError(clash_message(names))
