# Shell functions the deploy scripts share. Source it: `. deploy/lib.sh`.

# `sudo` when not root, nothing when root.
sudo_cmd=""
[ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"

# Installs the Debian packages named that are not installed yet (one
# `apt-get update` first, only when something is missing).
apt_install() {
    local missing=() p status
    for p in "$@"; do
        # `dpkg -s` also succeeds for a removed package that left its
        # configuration behind: ask for the installed state itself.
        status="$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)"
        [ "$status" = "install ok installed" ] || missing+=("$p")
    done
    if ((${#missing[@]})); then
        $sudo_cmd apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}"
    fi
}
