# Shared by .ci/test and .ci/run (sourced, not run). Expects the current
# directory to be the repository root.

CI_DIR=.ci
# Parallel compile jobs: CI machines have 2 cores.
CI_JOBS=${CI_JOBS:-2}

# meson_configure DIR [meson options...]
# Reconfigures DIR when it already is a meson build directory (keeps the
# incremental build), sets it up from scratch otherwise. Only a build
# directory that meson itself says it cannot reuse (made by another meson
# version) is wiped; an error in meson.build leaves DIR as it is.
meson_configure() {
  local dir=$1
  shift
  if [[ ! -f $dir/meson-private/coredata.dat ]]; then
    meson setup "$dir" "$@"
    return
  fi
  local out rc=0
  out=$(mktemp)
  meson setup --reconfigure "$dir" "$@" 2>&1 | tee "$out" || rc=$?
  if ((rc != 0)) && grep -qiE 'incompatible|--wipe' "$out"; then
    echo "ci: $dir cannot be reconfigured; wiping it and configuring afresh" >&2
    rc=0
    meson setup --wipe "$dir" "$@" || rc=$?
  fi
  rm -f "$out"
  return "$rc"
}

# run_suite DIR LABEL [meson setup options...] -- [meson test options...]
# Configures and builds DIR, runs meson test in it and counts the results
# with count_results.py, which prints "LABEL: N passed, N failed" last and
# leaves DIR/ci-counts.json for .ci/run. Returns non-zero on any failure
# (configure, build, meson test or a failed test case).
run_suite() {
  local dir=$1 label=$2
  shift 2
  local setup_args=() test_args=()
  while (($#)); do
    if [[ $1 == -- ]]; then
      shift
      test_args=("$@")
      break
    fi
    setup_args+=("$1")
    shift
  done

  # Stale results of an earlier run must never be counted: meson test does
  # not rewrite testlog.json when it runs no tests.
  rm -f "$dir/ci-counts.json" "$dir/meson-logs/testlog.json" "$dir"/meson-logs/testlog-*.json

  echo "ci: == $label: meson setup $dir ${setup_args[*]}"
  if ! meson_configure "$dir" "${setup_args[@]}"; then
    python3 "$CI_DIR/count_results.py" "$dir" --label "$label" \
      --stage-failed "meson setup"
    return 1
  fi

  echo "ci: == $label: ninja -C $dir -j$CI_JOBS"
  if ! ninja -C "$dir" -j"$CI_JOBS"; then
    python3 "$CI_DIR/count_results.py" "$dir" --label "$label" \
      --stage-failed "build"
    return 1
  fi

  echo "ci: == $label: meson test -C $dir ${test_args[*]}"
  local rc=0
  meson test -C "$dir" --no-rebuild --print-errorlogs --num-processes 2 \
    "${test_args[@]}" </dev/null || rc=$?
  echo "ci: meson test exited $rc"

  python3 "$CI_DIR/count_results.py" "$dir" --label "$label" --meson-rc "$rc"
}
