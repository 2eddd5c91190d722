#!/usr/bin/env python3
"""Print `go mod edit` flags that copy a module's replace directives into a wrapper module.

    go_replaces.py versions GOMOD_JSON            replaces that point at module versions, as they are
    go_replaces.py staging GOMOD_JSON V0_VERSION  ./staging/src/k8s.io/X replaces -> k8s.io/X@V0_VERSION

GOMOD_JSON is the output of `go mod edit -json <go.mod>`, read from the file named.
"""

import json
import sys


def versioned(replaces: list[dict]) -> list[str]:
    flags = []
    for replace in replaces:
        old, new = replace["Old"], replace["New"]
        if new.get("Version"):
            source = old["Path"] + ("@" + old["Version"] if old.get("Version") else "")
            flags.append("-replace=" + source + "=" + new["Path"] + "@" + new["Version"])
    return flags


def staging(replaces: list[dict], version: str) -> list[str]:
    return ["-replace=" + r["Old"]["Path"] + "=" + r["Old"]["Path"] + "@" + version
            for r in replaces if r["New"]["Path"].startswith("./staging/")]


def main() -> None:
    mode, path = sys.argv[1], sys.argv[2]
    with open(path) as handle:
        replaces = json.load(handle).get("Replace") or []
    flags = versioned(replaces) if mode == "versions" else staging(replaces, sys.argv[3])
    print("\n".join(flags))


if __name__ == "__main__":
    main()
