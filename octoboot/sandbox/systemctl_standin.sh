# systemctl stand-in (octoboot sandbox): the launcher's body, after its `#!/bin/sh` line
# (archive.write_systemctl_launcher). The verbs that only read state (is-active, is-enabled)
# and daemon-reload are this shell's: the probe and a service's start call them several
# times per machine, and a Python process costs ten times a shell's CPU. Every other verb
# is systemctl_standin.py's, which the last line (written with the launcher) execs.
quiet=0 verb=
for a in "$@"; do
    case $a in
        --quiet | -q) quiet=1 ;;
        -*) ;;
        *) if [ -z "$verb" ]; then verb=$a; fi ;;
    esac
done

# s= the unit's state from its pid file, as systemctl_standin.main_pid and status tell it.
state() {
    pidfile=$state_dir/$1.pid
    pid=
    if [ -r "$pidfile" ]; then read -r pid <"$pidfile" || :; fi
    case $pid in '' | *[!0-9]*) ;; *)
        if [ "$pid" -gt 0 ] 2>/dev/null && { read -r stat </proc/"$pid"/stat; } 2>/dev/null; then
            set -- ${stat##*)}
            if [ "$1" != Z ]; then s=active; return; fi
        fi ;;
    esac
    if [ -e "$pidfile" ]; then s=failed; else s=inactive; fi
}

# Linked in any `<target>.wants/` folder (systemctl_standin._wants_links).
enabled() {
    for w in "$units_dir"/* "$units_dir"/.[!.]* "$units_dir"/..?*; do
        case $w in *.wants) if [ -L "$w/$1" ]; then return 0; fi ;; esac
    done
    return 1
}

case $verb in
    daemon-reload) exit 0 ;;
    is-active | is-enabled)
        units_dir=${OCTOBOOT_SANDBOX_SYSTEMD_DIR:-/etc/systemd/system}
        state_dir=${OCTOBOOT_SANDBOX_HOST_DIR:-/run/octoboot-sandbox}/units
        worst=0 skipped=0 any=0
        for a in "$@"; do
            case $a in -*) continue ;; esac
            if [ "$skipped" = 0 ]; then skipped=1; continue; fi  # the verb
            any=1
            case $a in *.*) unit=$a ;; *) unit=$a.service ;; esac
            if [ "$verb" = is-active ]; then
                state "$unit"
                code=3
                if [ "$s" = active ]; then code=0; fi
            elif [ ! -f "$units_dir/$unit" ]; then
                echo "Failed to get unit file state for $unit: No such file or directory" >&2
                code=1 s=
            elif enabled "$unit"; then
                code=0 s=enabled
            else
                code=1 s=disabled
            fi
            if [ "$quiet" = 0 ] && [ -n "$s" ]; then echo "$s"; fi
            if [ "$code" -gt "$worst" ]; then worst=$code; fi
        done
        if [ "$any" = 0 ]; then echo "Too few arguments for $verb." >&2; exit 1; fi
        exit "$worst" ;;
esac
