#!/bin/sh
# phoenix-backup-loop: the daily backup for a stack whose parts are separate containers
# (compose.yaml's `backup` service); `phoenix up` does the same in its own loop.
#
# Sleeps until PHOENIX_BACKUP_AT (HH:MM, the container's local time: UTC unless TZ is set),
# runs `phoenix backup` with this script's arguments (e.g. --verify), and again the next
# day, until stopped. A missed time is not made up. A failed backup has already notified
# (PHOENIX_NOTIFY_URLS), been recorded and left the earlier backups intact: the loop logs
# its exit code and waits for the next day. SIGTERM stops the loop at once; a backup cut
# short leaves only temporary files, never a half backup that looks good.
set -eu

at="${PHOENIX_BACKUP_AT:-03:00}"
case "$at" in
  [0-9]:[0-5][0-9] | [01][0-9]:[0-5][0-9] | 2[0-3]:[0-5][0-9]) ;;
  [Oo][Ff][Ff])
    # The image's default (no backup inside `phoenix up`): this loop is the one that backs up.
    echo "phoenix-backup-loop: PHOENIX_BACKUP_AT=$at (the image's default, for \`phoenix up\`): set the time of the daily backup, HH:MM, e.g. 03:00" >&2
    exit 78 # EX_CONFIG
    ;;
  *)
    echo "phoenix-backup-loop: PHOENIX_BACKUP_AT=$at is not valid: expected HH:MM, e.g. 03:00" >&2
    exit 78 # EX_CONFIG, as `phoenix` itself
    ;;
esac

log() {
  printf '%s phoenix-backup-loop: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2
}

child=""
stop() {
  if [ -n "$child" ]; then
    kill -TERM "$child" 2>/dev/null || :
    wait "$child" || :
  fi
  log "stopped"
  exit 0
}
trap stop TERM INT

# Run in the background and wait, so that SIGTERM is handled at once, not after the child.
run() {
  "$@" &
  child=$!
  code=0
  wait "$child" || code=$?
  child=""
  return "$code"
}

seconds_until() {
  now=$(date +%s)
  next=$(date -d "$1" +%s)
  if [ "$next" -le "$now" ]; then
    next=$(date -d "tomorrow $1" +%s)
  fi
  echo $((next - now))
}

# The configuration and PHOENIX_HOME are checked now rather than at the first backup time:
# `phoenix backups` refuses an invalid configuration (exit 78) and lists what is there.
# Its exit 65 (a manifest names files not its own: refused, and said so) stops no backup.
code=0
run phoenix backups >&2 || code=$?
if [ "$code" -ne 0 ] && [ "$code" -ne 65 ]; then
  exit "$code"
fi

while :; do
  delay=$(seconds_until "$at")
  log "next backup at $at ($(date +%Z)), in $delay s"
  run sleep "$delay" || :
  log "backup starting"
  if run phoenix backup "$@"; then
    log "backup done"
  else
    log "backup failed (exit $?): earlier backups are intact, next try tomorrow"
  fi
done
