#!/usr/bin/env bash
# Start sdstudio the way a Linux desktop does and take a screenshot of it.
#
# In a private X server (Xvfb) with the openbox window manager (title bar:
# icon, title, buttons) and a tint2 task bar, the desktop entry is installed
# into a temporary XDG_DATA_HOME, the app is started from that entry with
# `gio launch`, and the whole screen is saved. The window's WM_CLASS must be
# "sdstudio" (the entry's StartupWMClass) or the script fails.
#
#     tools/desktop_entry_screenshot.sh [OUTPUT.png]    (default: screenshots/desktop-entry.png)
#
# SDSTUDIO_COMMAND picks the program whose entry is installed, for example a
# build: SDSTUDIO_COMMAND=dist/sdstudio/sdstudio tools/desktop_entry_screenshot.sh
#
# Needs: sdstudio installed (its `sdstudio` command), Xvfb, openbox, xdotool,
# xprop, gio (libglib2.0-bin) and ImageMagick's `import`; tint2 is optional.
# On Debian/Ubuntu: apt-get install xvfb openbox tint2 xdotool x11-utils libglib2.0-bin imagemagick
set -euo pipefail
cd "$(dirname "$0")/.."

output=$(realpath -m "${1:-screenshots/desktop-entry.png}")
mkdir -p "$(dirname "$output")"
launcher=$(command -v "${SDSTUDIO_COMMAND:-sdstudio}" || true)
[ -n "$launcher" ] || { echo "${SDSTUDIO_COMMAND:-sdstudio} is not installed" >&2; exit 2; }
launcher=$(realpath "$launcher")
for tool in Xvfb openbox xdotool xprop gio import; do
    command -v "$tool" >/dev/null || { echo "$tool is not installed" >&2; exit 2; }
done

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

export XDG_DATA_HOME="$work/data"
export XDG_CONFIG_HOME="$work/config"
export XDG_DATA_DIRS="$XDG_DATA_HOME:${XDG_DATA_DIRS:-/usr/local/share:/usr/share}"
export SDSTUDIO_HOME="$work/sdstudio"
export HF_HUB_OFFLINE=1
unset QT_QPA_PLATFORM

# A free display number.
display=99
while [ -e "/tmp/.X11-unix/X$display" ] || [ -e "/tmp/.X$display-lock" ]; do
    display=$((display + 1))
done
export DISPLAY=":$display"
Xvfb "$DISPLAY" -screen 0 1280x800x24 -nolisten tcp >"$work/xvfb.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do xprop -root >/dev/null 2>&1 && break; sleep 0.1; done

mkdir -p "$XDG_CONFIG_HOME/openbox"
cat >"$XDG_CONFIG_HOME/openbox/rc.xml" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<openbox_config xmlns="http://openbox.org/3.4/rc">
  <theme><name>Clearlooks</name><titleLayout>NLIMC</titleLayout></theme>
  <placement><policy>Smart</policy><center>yes</center></placement>
  <desktops><number>1</number></desktops>
</openbox_config>
EOF
openbox --config-file "$XDG_CONFIG_HOME/openbox/rc.xml" >"$work/openbox.log" 2>&1 &
pids+=($!)
if command -v tint2 >/dev/null; then
    tint2 >"$work/tint2.log" 2>&1 &
    pids+=($!)
fi
sleep 1

"$launcher" --install-desktop-entry
entry="$XDG_DATA_HOME/applications/io.github.sdstudio.SdStudio.desktop"
echo "Starting from $entry: $(grep '^Exec=' "$entry")"
gio launch "$entry"

window=""
for _ in $(seq 120); do
    window=$(xdotool search --onlyvisible --classname '^sdstudio$' 2>/dev/null | head -n 1 || true)
    [ -n "$window" ] && break
    sleep 0.5
done
[ -n "$window" ] || { echo "no sdstudio window appeared within 60 s" >&2; exit 1; }
app_pid=$(xdotool getwindowpid "$window" || true)
[ -n "$app_pid" ] && pids=("$app_pid" "${pids[@]}")
sleep 4

wm_class=$(xprop -id "$window" WM_CLASS)
title=$(xdotool getwindowname "$window")
echo "$wm_class"
echo "title: $title"
import -window root "$output"
echo "Saved $output"
case "$wm_class" in
    *'"sdstudio", "sdstudio"') ;;
    *) echo "WM_CLASS is not \"sdstudio\"" >&2; exit 1 ;;
esac
