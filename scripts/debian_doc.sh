# Sourced by the corpus scripts. `debian_doc PACKAGE FILE WORK` prints the
# folder holding FILE (an absolute path a Debian documentation package
# installs): the installed one when FILE is there, or else the one inside
# PACKAGE, downloaded into WORK and unpacked there, installing nothing.
# Fails (status 1, nothing printed) when the package cannot be had or
# lacks FILE.
debian_doc() {
    local package=$1 file=$2 work=$3
    if [ -f "$file" ]; then
        dirname "$file"
        return
    fi
    (cd "$work" && apt-get download "$package" > /dev/null 2>&1) || {
        apt-get update -qq && (cd "$work" && apt-get download "$package" > /dev/null)
    } || return 1
    dpkg-deb -x "$work/$package"_*.deb "$work/root" || return 1
    [ -f "$work/root$file" ] || { echo "debian_doc: $package has no $file" >&2; return 1; }
    dirname "$work/root$file"
}
