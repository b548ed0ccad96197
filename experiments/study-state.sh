#!/usr/bin/env bash
# Carry a long study's state (its database and the checkpoints of its runs) from one machine to the
# next: the sessions that run the paper's studies (issue 18) each get a fresh machine, and a study
# of ~9 hours outlives any one of them.
#
#   experiments/study-state.sh save    runs-data/paper.db experiments/state/paper.tar.xz
#   experiments/study-state.sh restore experiments/state/paper.tar.xz runs-data
#
# `save` stops nothing: stop the study first (SIGTERM: each run saves a checkpoint where it is),
# then save. The database is copied with `VACUUM INTO` (a consistent snapshot, WAL included); only
# each run's newest checkpoint goes in. Checkpoint paths are recorded absolute, so restore into the
# same path as the save (the repository's `runs-data/`), then rerun the study's command: it resumes.
set -euo pipefail

usage() {
    echo "usage: $0 save DB BUNDLE.tar.xz | restore BUNDLE.tar.xz DIR" >&2
    exit 2
}

[[ $# -eq 3 ]] || usage
case "$1" in
save)
    db=$2 bundle=$3
    [[ -f $db ]] || { echo "error: no database at $db" >&2; exit 1; }
    stem=$(basename "${db%.db}")
    dir=$(cd "$(dirname "$db")" && pwd)
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    sqlite3 "$db" "VACUUM INTO '$work/$stem.db'"
    files=("$stem.db")
    # The newest checkpoint of every run (model and optimiser), as the database names them.
    while IFS= read -r path; do
        for f in "$path".model.ot "$path".optim.ot; do
            [[ -f $f ]] || { echo "error: checkpoint file $f is missing" >&2; exit 1; }
            rel=${f#"$dir"/}
            mkdir -p "$work/$(dirname "$rel")"
            cp "$f" "$work/$rel"
            files+=("$rel")
        done
    done < <(sqlite3 "$db" "SELECT path FROM checkpoints c WHERE step = (SELECT max(step) FROM checkpoints WHERE run_id = c.run_id)")
    mkdir -p "$(dirname "$bundle")"
    tar -C "$work" -cf - "${files[@]}" | xz -9 -T1 > "$bundle"
    echo "saved $db and ${#files[@]} files ($(du -h "$bundle" | cut -f1)) to $bundle"
    ;;
restore)
    bundle=$2 dir=$3
    [[ -f $bundle ]] || { echo "error: no bundle at $bundle" >&2; exit 1; }
    mkdir -p "$dir"
    for db in $(xz -dc "$bundle" | tar -tf - | grep '\.db$'); do
        [[ ! -e $dir/$db ]] || { echo "error: $dir/$db exists; not overwriting it" >&2; exit 1; }
    done
    xz -dc "$bundle" | tar -C "$dir" -xf -
    echo "restored $bundle into $dir"
    ;;
*) usage ;;
esac
