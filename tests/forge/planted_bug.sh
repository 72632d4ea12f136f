#!/usr/bin/env bash
# Shows that the invariant suite can fail. Each planted one-line bug is applied to its own copy of the sources in
# a temporary directory, and the campaign there must FAIL; then the unmodified suite must pass with the same
# settings. Run from anywhere: tests/forge/planted_bug.sh (make test-forge runs it). Prints one line per bug.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
FORGE="$ROOT/node_modules/.bin/forge"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
# A failing campaign stops at its first failure; shrinking the sequence is not needed to know it failed.
export FOUNDRY_INVARIANT_SHRINK_RUN_LIMIT=0

BUGS=(
  "claim pays the cumulative amount, not the increase|contracts/EpochSettlement.sol|uint256 amount = cumulativeAmount - claimed;|uint256 amount = cumulativeAmount;"
  "redeem skips the deposit decrement|contracts/PaymentVault.sol|account.deposit = SafeCast.toUint128(available - increase);|account.deposit = SafeCast.toUint128(available);"
  "slash keeps the slashed stake in the registry|contracts/StakeRegistry.sol|if (amount != 0) token.safeTransfer(slashPool, amount);|"
)

# run_bug N: copy the sources to $WORK/N, apply bug N (its OLD text must occur exactly once) and run the campaign.
run_bug() {
  local dir="$WORK/$1" name file old new
  IFS='|' read -r name file old new <<<"${BUGS[$1]}"
  mkdir -p "$dir/tests"
  cp -r "$ROOT/contracts" "$ROOT/tools" "$ROOT/foundry.toml" "$dir/"
  cp -r "$ROOT/tests/forge" "$dir/tests/forge"
  ln -s "$ROOT/node_modules" "$dir/node_modules"
  OLD="$old" NEW="$new" python3 - "$dir/$file" <<'PY'
import os, sys
path, old, new = sys.argv[1], os.environ["OLD"], os.environ["NEW"]
text = open(path).read()
if text.count(old) != 1:
    sys.exit(f"planted bug no longer applies: {old!r} occurs {text.count(old)} times in {path}")
open(path, "w").write(text.replace(old, new))
PY
  (cd "$dir" && "$FORGE" test --mt invariant_moneyIsConserved) >"$dir.log" 2>&1
}

pids=()
for i in "${!BUGS[@]}"; do
  run_bug "$i" & pids+=($!)
done
failed=0
for i in "${!BUGS[@]}"; do
  name="${BUGS[$i]%%|*}"
  if wait "${pids[$i]}"; then
    echo "planted bug NOT caught: $name"; tail -20 "$WORK/$i.log"; failed=1
  elif grep -q "\[FAIL" "$WORK/$i.log"; then
    echo "planted bug caught: $name: $(grep -m1 -o '\[FAIL[^]]*]' "$WORK/$i.log" | cut -c1-160)"
  else
    echo "planted bug run broke without a failing invariant: $name"; tail -30 "$WORK/$i.log"; failed=1
  fi
done
[ "$failed" = 0 ] || exit 1

unset FOUNDRY_INVARIANT_SHRINK_RUN_LIMIT
if ! (cd "$ROOT" && "$FORGE" test); then
  echo "the unmodified suite FAILED"; exit 1
fi
echo "unmodified suite passed"
