# Sourced by .ci/run before the tests: installs what the Celery system tests (tests/system/, marker
# `celery`) start for themselves, PostgreSQL and Redis from Debian packages, when they are missing, and
# tells the tests that in CI a missing service is a failure, never a skip.
#
# Only binaries are installed: the tests start their own PostgreSQL (initdb + pg_ctl as an unprivileged
# user) and Redis on free 127.0.0.1 ports in temporary directories, and stop them afterwards. Services the
# packages would start at install time are prevented from starting (policy-rc.d), so nothing listens on
# 5432 or 6379 afterwards.
#
# Usable by hand too (as root, or with passwordless sudo): `bash .ci/services.sh`.

_gemini_missing_services() {
  local missing=()
  if ! command -v initdb >/dev/null 2>&1 && ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    missing+=(postgresql)
  fi
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  echo "${missing[@]}"
}

_gemini_install_services() {
  local missing sudo=() policy=/usr/sbin/policy-rc.d added_policy=0 started
  missing=$(_gemini_missing_services)
  started=$(date +%s)
  if [ -z "$missing" ]; then
    echo "services: PostgreSQL and Redis binaries present"
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo=(sudo -n)
    else
      echo "services: missing Debian packages: $missing; run as root: apt-get install -y $missing" >&2
      return 1
    fi
  fi
  echo "services: installing $missing (Debian packages)"
  if [ ! -e "$policy" ]; then  # do not start the packaged daemons: the tests start their own
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod 755 "$policy"
    added_policy=1
  fi
  local status=0
  # shellcheck disable=SC2086  # $missing is a list of package names
  { "${sudo[@]}" apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends $missing \
      >/dev/null; } || status=$?
  if [ "$added_policy" -eq 1 ]; then
    "${sudo[@]}" rm -f "$policy"
  fi
  if [ "$status" -ne 0 ]; then
    echo "services: apt-get install $missing failed ($status)" >&2
    return "$status"
  fi
  echo "services: installed $missing in $(( $(date +%s) - started ))s"
}

_gemini_install_services
# In CI every service must be there: the Celery system tests fail instead of skipping.
export GEMINI_FILES_REQUIRE_SERVICES=1
