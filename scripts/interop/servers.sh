#!/usr/bin/env bash
# Real FTP servers on loopback for ftpdrop's interop tests.
#
#   servers.sh install          install vsftpd, pure-ftpd, proftpd, pyftpdlib (idempotent)
#   servers.sh start  [DIR]     start all servers under DIR, write DIR/servers.env
#   servers.sh stop   [DIR]     stop them
#   servers.sh status [DIR]     show which are up
#
# DIR defaults to $FTPDROP_INTEROP_DIR or <repo>/target/interop.
# Must run as root (creates a unix user, servers chroot). See README.md.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SCRIPT_DIR/../.." && pwd)"
DEFAULT_DIR="${FTPDROP_INTEROP_DIR:-$REPO_DIR/target/interop}"
# Extracted .debs and the pyftpdlib venv. Not wiped by start/stop.
PKG_DIR="${FTPDROP_INTEROP_PKGS:-$REPO_DIR/target/interop-pkgs}"

PYFTPDLIB_VERSION="2.2.0"
# pyftpdlib's TLS handler needs pyOpenSSL (the pyquirks-tls instance).
PYOPENSSL_VERSION="26.4.0"
TEST_USER="${FTPDROP_INTEROP_USER:-ftpdrop-test}"
TEST_PASS="${FTPDROP_INTEROP_PASS:-ftpdrop-Pa55}"
# Libraries the extracted proftpd/pure-ftpd binaries need (none conflict
# with vsftpd). vsftpd itself is installed the normal way.
# microsocks (SOCKS5) and tinyproxy (HTTP CONNECT) are started by the
# interop tests themselves, as the proxies a partner's firewall allows.
APT_PKGS=(vsftpd curl openssl ca-certificates microsocks tinyproxy
          libhiredis0.14 libmemcached11 libmemcachedutil2 libpcre2-posix3
          libsodium23 libcap2 libpam0g libssl3 libacl1 libidn2-0 libcrypt1 zlib1g)
# Downloaded and unpacked only (they conflict with vsftpd as packages).
DEB_PKGS=(pure-ftpd proftpd-core proftpd-mod-crypto)

# name:ENVPREFIX of every instance started by `start`.
SERVERS=(vsftpd:VSFTPD vsftpd-tls:VSFTPDTLS vsftpd-limited:VSFTPDLIMITED
         vsftpd-tls12:VSFTPDTLS12 vsftpd-implicit:VSFTPDIMPLICIT
         vsftpd-throttled:VSFTPDTHROTTLED vsftpd-mtls:VSFTPDMTLS
         vsftpd-active:VSFTPDACTIVE
         pureftpd:PUREFTPD proftpd:PROFTPD proftpd-tls:PROFTPDTLS
         proftpd-tls12:PROFTPDTLS12 proftpd-implicit:PROFTPDIMPLICIT
         pyftpdlib:PYFTPDLIB pyquirks:PYQUIRKS pyquirks-tls:PYQUIRKSTLS)
# pure-ftpd caps its client limit at half its passive range size.
PASV_RANGE_SIZE=128

log() { printf '[interop] %s\n' "$*" >&2; }
die() { printf '[interop] ERROR: %s\n' "$*" >&2; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "must run as root"; }

pick_python() {
    local p
    for p in "${FTPDROP_PYTHON:-}" python3 /usr/bin/python3; do
        [ -n "$p" ] && command -v "$p" >/dev/null 2>&1 && { command -v "$p"; return; }
    done
    return 1
}

# ---------------------------------------------------------------- install ---

apt_updated=0
apt_update_once() {
    if [ "$apt_updated" = 0 ]; then
        log "apt-get update"
        apt-get update -qq >/dev/null
        apt_updated=1
    fi
}

pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

install_apt() {
    local missing=() p
    for p in "${APT_PKGS[@]}"; do pkg_installed "$p" || missing+=("$p"); done
    pick_python >/dev/null || missing+=(python3)
    if [ "${#missing[@]}" -gt 0 ]; then
        apt_update_once
        log "apt-get install ${missing[*]}"
        # Never let a package's maintainer script start a system service
        # (vsftpd would grab port 21 under a real init).
        local made_policy=0
        if [ ! -e /usr/sbin/policy-rc.d ]; then
            printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
            chmod 755 /usr/sbin/policy-rc.d
            made_policy=1
        fi
        local rc=0
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            "${missing[@]}" >"$PKG_DIR/apt-install.log" 2>&1 || rc=$?
        [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
        if [ "$rc" != 0 ]; then
            cat "$PKG_DIR/apt-install.log" >&2
            die "apt-get install failed"
        fi
    fi
}

install_debs() {
    local p ver stamp dest
    for p in "${DEB_PKGS[@]}"; do
        dest="$PKG_DIR/$p"
        stamp="$dest/.ftpdrop-installed"
        if [ -f "$stamp" ]; then continue; fi
        apt_update_once
        log "apt-get download $p (unpacked into $dest)"
        rm -rf "$dest" "$PKG_DIR/debs/$p"
        mkdir -p "$PKG_DIR/debs/$p" "$dest"
        (cd "$PKG_DIR/debs/$p" && apt-get download -q -o APT::Sandbox::User=root "$p" \
            >/dev/null) || die "apt-get download $p failed"
        local deb
        deb="$(ls "$PKG_DIR/debs/$p"/*.deb | head -n1)"
        dpkg-deb -x "$deb" "$dest"
        ver="$(dpkg-deb -f "$deb" Version)"
        echo "$p $ver" >"$stamp"
    done
}

check_binaries() {
    local b missing
    for b in "$PKG_DIR/pure-ftpd/usr/sbin/pure-ftpd" "$PKG_DIR/pure-ftpd/usr/bin/pure-pw" \
             "$PKG_DIR/proftpd-core/usr/sbin/proftpd" \
             "$PKG_DIR/proftpd-core/usr/lib/proftpd/mod_digest.so" \
             "$PKG_DIR/proftpd-mod-crypto/usr/lib/proftpd/mod_tls.so"; do
        [ -e "$b" ] || die "missing $b (run: servers.sh install)"
        missing="$(ldd "$b" 2>&1 | grep 'not found' || true)"
        [ -z "$missing" ] || die "$b: unresolved libraries:
$missing"
    done
    command -v vsftpd >/dev/null || [ -x /usr/sbin/vsftpd ] || die "vsftpd missing"
}

install_pyftpdlib() {
    local venv="$PKG_DIR/pyvenv" py
    if [ -x "$venv/bin/python" ] && \
       [ "$("$venv/bin/python" -c 'import pyftpdlib, OpenSSL; print(pyftpdlib.__ver__, OpenSSL.__version__)' 2>/dev/null)" \
         = "$PYFTPDLIB_VERSION $PYOPENSSL_VERSION" ]; then
        return
    fi
    py="$(pick_python)" || die "no python3"
    log "creating venv $venv with pyftpdlib==$PYFTPDLIB_VERSION pyopenssl==$PYOPENSSL_VERSION"
    rm -rf "$venv"
    if ! "$py" -m venv "$venv" >/dev/null 2>&1; then
        # Debian's python3 needs python3-venv for `-m venv`.
        apt_update_once
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null
        rm -rf "$venv"
        "$py" -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install -q --disable-pip-version-check \
        "pyftpdlib==$PYFTPDLIB_VERSION" "pyopenssl==$PYOPENSSL_VERSION" \
        || die "pip install pyftpdlib pyopenssl failed"
}

TEST_HOME=/var/lib/ftpdrop-test
ensure_user() {
    # vsftpd chdir()s to the user's home before local_root, so the home must
    # exist (it is not used as an FTP root by any server).
    if ! getent passwd "$TEST_USER" >/dev/null; then
        log "creating unix user $TEST_USER"
        # A login shell listed in /etc/shells is needed: Debian's
        # /etc/pam.d/vsftpd has pam_shells.
        useradd --system --no-create-home --home-dir "$TEST_HOME" \
            --shell /bin/bash --user-group "$TEST_USER"
    elif [ "$(getent passwd "$TEST_USER" | cut -d: -f6)" != "$TEST_HOME" ]; then
        usermod --home "$TEST_HOME" "$TEST_USER"
    fi
    mkdir -p "$TEST_HOME"
    chown "$TEST_USER:" "$TEST_HOME"
    # Cheap and keeps the password in sync with FTPDROP_INTEROP_PASS.
    echo "$TEST_USER:$TEST_PASS" | chpasswd
}

cmd_install() {
    need_root
    mkdir -p "$PKG_DIR"
    install_apt
    install_debs
    check_binaries
    install_pyftpdlib
    ensure_user
    log "installed: vsftpd $(dpkg-query -W -f='${Version}' vsftpd)," \
        "$(cat "$PKG_DIR/pure-ftpd/.ftpdrop-installed")," \
        "$(cat "$PKG_DIR/proftpd-core/.ftpdrop-installed")," \
        "pyftpdlib $PYFTPDLIB_VERSION"
}

# ------------------------------------------------------------------ start ---

resolve_dir() {
    local d="${1:-$DEFAULT_DIR}"
    mkdir -p "$d"
    d="$(cd "$d" && pwd)"
    case "$d" in
        *[[:space:]\'\"\$\\]*) die "DIR must not contain whitespace, quotes, \$ or \\: $d" ;;
    esac
    echo "$d"
}

gen_tls() {
    local t="$1/tls"
    mkdir -p "$t"
    (
        cd "$t"
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -sha256 \
            -keyout ca.key -out ca.pem -subj "/CN=ftpdrop interop test CA" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" >/dev/null 2>&1
        openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr \
            -subj "/CN=localhost" >/dev/null 2>&1
        printf '%s\n' "basicConstraints=CA:FALSE" \
            "keyUsage=critical,digitalSignature,keyEncipherment" \
            "extendedKeyUsage=serverAuth" \
            "subjectAltName=DNS:localhost,IP:127.0.0.1" >server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
            -days 3650 -sha256 -extfile server.ext -out server.pem >/dev/null 2>&1
        cat server.pem ca.pem >server-chain.pem
        # Same CA, but only for the name "localhost" (no IP address): given
        # to pure-ftpd, so that connecting to 127.0.0.1 fails the name check.
        openssl req -newkey rsa:2048 -nodes -keyout localhost-only.key -out server.csr \
            -subj "/CN=localhost" >/dev/null 2>&1
        printf '%s\n' "basicConstraints=CA:FALSE" \
            "keyUsage=critical,digitalSignature,keyEncipherment" \
            "extendedKeyUsage=serverAuth" \
            "subjectAltName=DNS:localhost" >server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
            -days 3650 -sha256 -extfile server.ext -out localhost-only.pem >/dev/null 2>&1
        # A client certificate from the same CA, for the server that
        # requires one (vsftpd-mtls: require_cert, validate_cert).
        openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr \
            -subj "/CN=ftpdrop interop client" >/dev/null 2>&1
        printf '%s\n' "basicConstraints=CA:FALSE" \
            "keyUsage=critical,digitalSignature" "extendedKeyUsage=clientAuth" >client.ext
        openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
            -days 3650 -sha256 -extfile client.ext -out client.pem >/dev/null 2>&1
        chmod 600 ca.key server.key localhost-only.key
        chmod 644 client.key
        rm -f server.csr server.ext client.csr client.ext
    ) || die "openssl failed to create test certificates"
}

# write_vsftpd NAME PORT PASV_LO PASV_HI EXTRA...
write_vsftpd() {
    local name="$1" port="$2" lo="$3" hi="$4"; shift 4
    local d="$DIR/$name"
    cat >"$d/etc/vsftpd.conf" <<EOF
# generated by scripts/interop/servers.sh
listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
listen_port=$port
background=NO
anonymous_enable=NO
local_enable=YES
write_enable=YES
local_umask=022
chroot_local_user=YES
allow_writeable_chroot=YES
local_root=$d/root
secure_chroot_dir=$d/empty
pam_service_name=vsftpd
userlist_enable=NO
tcp_wrappers=NO
seccomp_sandbox=NO
isolate=NO
isolate_network=NO
utf8_filesystem=YES
pasv_enable=YES
pasv_min_port=$lo
pasv_max_port=$hi
pasv_address=127.0.0.1
pasv_addr_resolve=NO
connect_from_port_20=NO
dirmessage_enable=NO
use_localtime=NO
max_clients=64
syslog_enable=NO
xferlog_enable=YES
xferlog_std_format=NO
log_ftp_protocol=YES
vsftpd_log_file=$d/log/vsftpd.log
ftpd_banner=ftpdrop interop $name ready
EOF
    local line
    for line in "$@"; do echo "$line" >>"$d/etc/vsftpd.conf"; done
}

# Puts a pure-ftpd virtual user into its own puredb.
#
# Default: `pure-pw useradd`, i.e. what a real admin would do. pure-pw hashes
# with argon2id and calibrates the cost to take >= ~1 s on this machine
# (observed: m=8 MiB, t=1023, ~2.5-3.5 s of server CPU per login).
# FTPDROP_PUREFTPD_CHEAP_HASH=1: write the passwd line ourselves with a
# SHA-512 crypt(3) hash ($6$, `openssl passwd -6`), which pure-ftpd verifies
# through crypt(3) in milliseconds; the db is still built by `pure-pw mkdb`.
# (pure-pw's own knobs do not help much: -M <MB> is rejected below 8192 by
# a unit bug in 1.0.50, and -C 64 only lowers the target to ~250-500 ms.)
write_pureftpd_users() {
    local d="$DIR/pureftpd"
    local pw="$PKG_DIR/pure-ftpd/usr/bin/pure-pw"
    rm -f "$d/etc/pureftpd.passwd" "$d/etc/pureftpd.pdb"
    if [ "${FTPDROP_PUREFTPD_CHEAP_HASH:-0}" = 1 ]; then
        local uid gid hash
        uid="$(id -u "$TEST_USER")"; gid="$(id -g "$TEST_USER")"
        hash="$(openssl passwd -6 "$TEST_PASS")"
        (umask 077; echo "$TEST_USER:$hash:$uid:$gid::$d/root/./::::::::::::" \
            >"$d/etc/pureftpd.passwd")
        "$pw" mkdb "$d/etc/pureftpd.pdb" -f "$d/etc/pureftpd.passwd" \
            >"$d/log/pure-pw.log" 2>&1 \
            || { cat "$d/log/pure-pw.log" >&2; die "pure-pw mkdb failed"; }
        return
    fi
    printf '%s\n%s\n' "$TEST_PASS" "$TEST_PASS" | \
        "$pw" useradd "$TEST_USER" -f "$d/etc/pureftpd.passwd" -F "$d/etc/pureftpd.pdb" \
        -u "$TEST_USER" -g "$TEST_USER" -d "$d/root" -m >"$d/log/pure-pw.log" 2>&1 \
        || { cat "$d/log/pure-pw.log" >&2; die "pure-pw useradd failed"; }
}

# write_proftpd NAME PORT PASV_LO PASV_HI [extra config lines...]
write_proftpd() {
    local name="$1" port="$2" lo="$3" hi="$4"; shift 4
    local d="$DIR/$name" uid gid hash
    uid="$(id -u "$TEST_USER")"; gid="$(id -g "$TEST_USER")"
    hash="$(openssl passwd -6 "$TEST_PASS")"
    # Virtual user (mod_auth_file): own passwd/group files, home = root dir.
    echo "$TEST_USER:$hash:$uid:$gid::$d/root:/bin/bash" >"$d/etc/passwd"
    echo "$TEST_USER:x:$gid:" >"$d/etc/group"
    chmod 600 "$d/etc/passwd"
    cat >"$d/etc/proftpd.conf" <<EOF
# generated by scripts/interop/servers.sh
ServerName              "ftpdrop interop $name"
ServerIdent             on "ftpdrop interop $name ready"
ServerType              standalone
DefaultServer           on
Port                    $port
DefaultAddress          127.0.0.1
SocketBindTight         on
UseIPv6                 off
UseReverseDNS           off
User                    nobody
Group                   nogroup
Umask                   022
MaxInstances            64
TimeoutIdle             600
PidFile                 $d/run/proftpd.pid
ScoreboardFile          $d/run/proftpd.scoreboard
DelayTable              $d/run/proftpd.delay
ControlsEngine          off
ControlsSocket          $d/run/proftpd.sock
WtmpLog                 off
SystemLog               $d/log/proftpd.log
TransferLog             $d/log/xferlog
LogFormat               cmds "%t %a %u \"%r\" %s"
ExtendedLog             $d/log/commands.log ALL cmds

# proftpd-core's modules and mod_tls (from proftpd-mod-crypto), linked
# into one folder: ModulePath takes one.
ModulePath              $DIR/proftpd-modules
<IfModule mod_dso.c>
  LoadModule mod_digest.c
  LoadModule mod_tls.c
</IfModule>
<IfModule mod_digest.c>
  DigestEngine          on
  DigestAlgorithms      all
</IfModule>
<IfModule mod_delay.c>
  DelayEngine           off
</IfModule>
<IfModule mod_auth_pam.c>
  AuthPAM               off
</IfModule>
# There is no "UseUTF8" directive in 1.3.8: mod_lang (compiled in) handles
# RFC 2640; with LangEngine on, FEAT lists UTF8 and OPTS UTF8 ON works.
<IfModule mod_lang.c>
  LangEngine            on
</IfModule>

AuthOrder               mod_auth_file.c
AuthUserFile            $d/etc/passwd
AuthGroupFile           $d/etc/group
RequireValidShell       off
DefaultRoot             ~
AllowOverwrite          on
AllowStoreRestart       on
AllowRetrieveRestart    on
PassivePorts            $lo $hi
MasqueradeAddress       127.0.0.1
EOF
    printf '%s\n' "$@" >>"$d/etc/proftpd.conf"
}

# mod_tls settings for a proftpd instance: TLS required on control and
# data, session reuse required on data connections (mod_tls's default:
# no NoSessionReuseRequired), the given protocols. $1: name, $2: protocols,
# $3: "implicit" or "explicit".
proftpd_tls() {
    local name="$1" protocols="$2" mode="$3" opts=""
    [ "$mode" = implicit ] && opts="UseImplicitSSL"
    printf '%s\n' \
        "TLSEngine on" \
        "TLSLog $DIR/$name/log/tls.log" \
        "TLSProtocol $protocols" \
        "TLSRequired on" \
        "TLSRSACertificateFile $DIR/tls/server.pem" \
        "TLSRSACertificateKeyFile $DIR/tls/server.key" \
        "TLSVerifyClient off" \
        ${opts:+"TLSOptions $opts"}
}

# launch NAME CMD...   (own session/process group, pid -> DIR/NAME/run/pid)
launch() {
    local name="$1"; shift
    local d="$DIR/$name"
    setsid "$@" </dev/null >"$d/log/stdout.log" 2>&1 &
    echo "$!" >"$d/run/pid"
}

show_log() {
    local name="$1" f
    for f in "$DIR/$name"/log/*; do
        [ -f "$f" ] && [ "${f##*/}" != greeting.txt ] || continue
        echo "----- $f (last 60 lines) -----" >&2
        tail -n 60 "$f" >&2 || true
    done
}

start_failed() {
    local rc="$1"
    [ "$rc" = 0 ] && return 0
    if [ "${FTPDROP_INTEROP_KEEP_ON_FAIL:-0}" = 1 ]; then
        log "FTPDROP_INTEROP_KEEP_ON_FAIL=1: leaving started servers running"
    else
        cmd_stop "$DIR" || true
    fi
    exit "$rc"
}

cmd_start() {
    need_root
    DIR="$(resolve_dir "${1:-}")"
    check_binaries
    [ -x "$PKG_DIR/pyvenv/bin/python" ] || die "pyftpdlib venv missing (run: servers.sh install)"
    ensure_user
    if any_running; then
        log "servers already running under $DIR; stopping them first"
        cmd_stop "$DIR"
    fi
    local py; py="$(pick_python)"
    local n="${#SERVERS[@]}" entry name i=0
    mapfile -t portlines < <("$py" "$SCRIPT_DIR/ftptool.py" ports "$n" "$n" "$PASV_RANGE_SIZE")
    declare -A PORT PLO PHI
    for entry in "${SERVERS[@]}"; do
        name="${entry%%:*}"
        PORT[$name]="${portlines[$i]}"
        read -r PLO[$name] PHI[$name] <<<"${portlines[$((i + n))]}"
        i=$((i + 1))
        rm -rf "${DIR:?}/$name"
        mkdir -p "$DIR/$name"/{root,log,etc,run}
        # vsftpd, pure-ftpd and proftpd write as the test user.
        chown "$TEST_USER:" "$DIR/$name/root"
    done
    rm -f "$DIR/servers.env"
    gen_tls "$DIR"

    # The chrooting servers act as the test user inside DIR: every parent
    # directory must be searchable by it (not the case under /root, say).
    if ! runuser -u "$TEST_USER" -- test -w "$DIR/vsftpd/root" -a -x "$DIR/vsftpd/root"; then
        die "$TEST_USER cannot reach $DIR/vsftpd/root; put DIR under a world-searchable path"
    fi

    # From here on, any failure stops what was already launched.
    trap 'start_failed $?' EXIT

    # --- vsftpd (plain, TLS, limited) ---
    local vs; vs="$(command -v vsftpd || echo /usr/sbin/vsftpd)"
    for name in vsftpd vsftpd-tls vsftpd-limited vsftpd-tls12 vsftpd-implicit vsftpd-throttled \
        vsftpd-mtls vsftpd-active; do
        mkdir -p "$DIR/$name/empty"; chmod 755 "$DIR/$name/empty"
    done
    local tls_opts=(ssl_enable=YES allow_anon_ssl=NO
        force_local_logins_ssl=YES force_local_data_ssl=YES require_ssl_reuse=YES
        ssl_sslv2=NO ssl_sslv3=NO ssl_tlsv1=YES ssl_ciphers=HIGH debug_ssl=YES
        "rsa_cert_file=$DIR/tls/server.pem" "rsa_private_key_file=$DIR/tls/server.key")
    # lock_upload_files=NO lets several connections write one file at once
    # (segmented uploads); the other instances keep vsftpd's default, which
    # makes a second upload to a file wait for the first.
    write_vsftpd vsftpd "${PORT[vsftpd]}" "${PLO[vsftpd]}" "${PHI[vsftpd]}" \
        lock_upload_files=NO
    write_vsftpd vsftpd-tls "${PORT[vsftpd-tls]}" "${PLO[vsftpd-tls]}" "${PHI[vsftpd-tls]}" \
        ssl_enable=YES implicit_ssl=NO allow_anon_ssl=NO \
        force_local_logins_ssl=YES force_local_data_ssl=YES require_ssl_reuse=YES \
        ssl_sslv2=NO ssl_sslv3=NO ssl_tlsv1=YES ssl_ciphers=HIGH debug_ssl=YES \
        "rsa_cert_file=$DIR/tls/server.pem" "rsa_private_key_file=$DIR/tls/server.key"
    write_vsftpd vsftpd-limited "${PORT[vsftpd-limited]}" "${PLO[vsftpd-limited]}" \
        "${PHI[vsftpd-limited]}" max_per_ip=2
    # vsftpd 3.0.3 has no option for the TLS version; OpenSSL's own config
    # (read at SSL init, found through OPENSSL_CONF) caps it at TLS 1.2.
    write_vsftpd vsftpd-tls12 "${PORT[vsftpd-tls12]}" "${PLO[vsftpd-tls12]}" \
        "${PHI[vsftpd-tls12]}" implicit_ssl=NO "${tls_opts[@]}"
    printf '%s\n' "openssl_conf = ftpdrop_conf" "[ftpdrop_conf]" "ssl_conf = ftpdrop_ssl" \
        "[ftpdrop_ssl]" "system_default = ftpdrop_tls" "[ftpdrop_tls]" \
        "MaxProtocol = TLSv1.2" >"$DIR/vsftpd-tls12/etc/openssl.cnf"
    write_vsftpd vsftpd-implicit "${PORT[vsftpd-implicit]}" "${PLO[vsftpd-implicit]}" \
        "${PHI[vsftpd-implicit]}" implicit_ssl=YES "${tls_opts[@]}"
    # 20 MB/s per connection, like a WAN link or a hosting plan's cap: for
    # bench/segmented.sh (segmented uploads against single-stream clients).
    write_vsftpd vsftpd-throttled "${PORT[vsftpd-throttled]}" "${PLO[vsftpd-throttled]}" \
        "${PHI[vsftpd-throttled]}" lock_upload_files=NO local_max_rate=20000000
    # Mutual TLS: the client must show a certificate the test CA signed.
    write_vsftpd vsftpd-mtls "${PORT[vsftpd-mtls]}" "${PLO[vsftpd-mtls]}" \
        "${PHI[vsftpd-mtls]}" implicit_ssl=NO "${tls_opts[@]}" \
        require_cert=YES validate_cert=YES "ca_certs_file=$DIR/tls/ca.pem"
    # Active mode only, as behind a firewall that lets no passive port in.
    write_vsftpd vsftpd-active "${PORT[vsftpd-active]}" "${PLO[vsftpd-active]}" \
        "${PHI[vsftpd-active]}" pasv_enable=NO port_enable=YES
    for name in vsftpd vsftpd-tls vsftpd-limited vsftpd-implicit vsftpd-throttled vsftpd-mtls \
        vsftpd-active; do
        launch "$name" "$vs" "$DIR/$name/etc/vsftpd.conf"
    done
    launch vsftpd-tls12 env "OPENSSL_CONF=$DIR/vsftpd-tls12/etc/openssl.cnf" \
        "$vs" "$DIR/vsftpd-tls12/etc/vsftpd.conf"

    # --- pure-ftpd (virtual user in puredb, explicit TLS optional) ---
    write_pureftpd_users
    launch pureftpd "$PKG_DIR/pure-ftpd/usr/sbin/pure-ftpd" \
        -S "127.0.0.1,${PORT[pureftpd]}" -4 \
        -l "puredb:$DIR/pureftpd/etc/pureftpd.pdb" \
        -E -A -H -U 133:022 -c 64 -C 32 \
        -p "${PLO[pureftpd]}:${PHI[pureftpd]}" -P 127.0.0.1 \
        -g "$DIR/pureftpd/run/pure-ftpd.pid" \
        -O "clf:$DIR/pureftpd/log/transfer.log" \
        -Y 1 -2 "$DIR/tls/localhost-only.pem,$DIR/tls/localhost-only.key"

    # --- proftpd (virtual user via AuthUserFile, mod_digest) ---
    rm -rf "$DIR/proftpd-modules"; mkdir -p "$DIR/proftpd-modules"
    ln -s "$PKG_DIR"/proftpd-core/usr/lib/proftpd/* "$DIR/proftpd-modules/"
    ln -sf "$PKG_DIR/proftpd-mod-crypto/usr/lib/proftpd/mod_tls.so" "$DIR/proftpd-modules/"
    write_proftpd proftpd "${PORT[proftpd]}" "${PLO[proftpd]}" "${PHI[proftpd]}"
    # mod_tls with reuse required: TLS 1.3 (it hands out tickets on the
    # control connection only), TLS 1.2 only, and implicit TLS 1.3 only.
    write_proftpd proftpd-tls "${PORT[proftpd-tls]}" "${PLO[proftpd-tls]}" \
        "${PHI[proftpd-tls]}" "$(proftpd_tls proftpd-tls "TLSv1.2 TLSv1.3" explicit)"
    write_proftpd proftpd-tls12 "${PORT[proftpd-tls12]}" "${PLO[proftpd-tls12]}" \
        "${PHI[proftpd-tls12]}" "$(proftpd_tls proftpd-tls12 TLSv1.2 explicit)"
    write_proftpd proftpd-implicit "${PORT[proftpd-implicit]}" "${PLO[proftpd-implicit]}" \
        "${PHI[proftpd-implicit]}" "$(proftpd_tls proftpd-implicit TLSv1.3 implicit)"
    for name in proftpd proftpd-tls proftpd-tls12 proftpd-implicit; do
        "$PKG_DIR/proftpd-core/usr/sbin/proftpd" -t -c "$DIR/$name/etc/proftpd.conf" \
            >"$DIR/$name/log/configtest.log" 2>&1 || {
                cat "$DIR/$name/log/configtest.log" >&2
                die "$name config test failed"; }
        launch "$name" "$PKG_DIR/proftpd-core/usr/sbin/proftpd" --nodaemon \
            -c "$DIR/$name/etc/proftpd.conf"
    done

    # --- pyftpdlib (runs as root, no chroot: virtual fs rooted at -d) ---
    launch pyftpdlib "$PKG_DIR/pyvenv/bin/python" -m pyftpdlib \
        -i 127.0.0.1 -p "${PORT[pyftpdlib]}" -w -d "$DIR/pyftpdlib/root" \
        -n 127.0.0.1 -r "${PLO[pyftpdlib]}-${PHI[pyftpdlib]}" \
        -u "$TEST_USER" -P "$TEST_PASS" -D

    # --- pyftpdlib with per-login quirks (see quirky_ftpd.py) ---
    launch pyquirks "$PKG_DIR/pyvenv/bin/python" "$SCRIPT_DIR/quirky_ftpd.py" \
        127.0.0.1 "${PORT[pyquirks]}" "$DIR/pyquirks/root" "$TEST_PASS" \
        "${PLO[pyquirks]}" "${PHI[pyquirks]}"
    # The same with explicit TLS (pyOpenSSL), for the TLS quirks.
    launch pyquirks-tls env "FTPDROP_QUIRKS_TLS=$DIR/tls/server.pem:$DIR/tls/server.key" \
        "$PKG_DIR/pyvenv/bin/python" "$SCRIPT_DIR/quirky_ftpd.py" \
        127.0.0.1 "${PORT[pyquirks-tls]}" "$DIR/pyquirks-tls/root" "$TEST_PASS" \
        "${PLO[pyquirks-tls]}" "${PHI[pyquirks-tls]}"

    # --- wait for greetings ---
    local failed=()
    for entry in "${SERVERS[@]}"; do
        name="${entry%%:*}"
        local wait_tls=""
        case "$name" in vsftpd-implicit|proftpd-implicit) wait_tls=tls ;; esac
        if ! "$py" "$SCRIPT_DIR/ftptool.py" wait 127.0.0.1 "${PORT[$name]}" 30 \
                "$(cat "$DIR/$name/run/pid")" $wait_tls >"$DIR/$name/log/greeting.txt" 2>&1; then
            failed+=("$name")
        fi
    done
    if [ "${#failed[@]}" -gt 0 ]; then
        for name in "${failed[@]}"; do
            log "server $name did not come up (port ${PORT[$name]}); its logs:"
            cat "$DIR/$name/log/greeting.txt" >&2 || true
            show_log "$name"
        done
        die "failed to start: ${failed[*]}"
    fi

    local env="$DIR/servers.env.tmp" prefix
    {
        echo "# generated by scripts/interop/servers.sh start; $(date -u +%FT%TZ)"
        echo "FTPDROP_INTEROP_DIR=$DIR"
        echo "FTPDROP_TLS_CA=$DIR/tls/ca.pem"
        for entry in "${SERVERS[@]}"; do
            name="${entry%%:*}"; prefix="FTPDROP_${entry##*:}"
            echo "${prefix}_HOST=127.0.0.1"
            echo "${prefix}_PORT=${PORT[$name]}"
            if [ "$name" = pyquirks ] || [ "$name" = pyquirks-tls ]; then
                echo "${prefix}_USER=q"  # + "-quirk-quirk..." (see quirky_ftpd.py)
            else
                echo "${prefix}_USER=$TEST_USER"
            fi
            echo "${prefix}_PASS=$TEST_PASS"
            echo "${prefix}_ROOT=$DIR/$name/root"
            echo "${prefix}_PASV_MIN=${PLO[$name]}"
            echo "${prefix}_PASV_MAX=${PHI[$name]}"
            echo "${prefix}_LOG=$DIR/$name/log"
        done
        echo "FTPDROP_VSFTPDTLS_TLS=explicit-required"
        echo "FTPDROP_VSFTPDLIMITED_MAX_PER_IP=2"
        echo "FTPDROP_VSFTPDTLS12_TLS=explicit-required-max-tls1.2"
        echo "FTPDROP_VSFTPDIMPLICIT_TLS=implicit-required"
        echo "FTPDROP_VSFTPDTHROTTLED_MAX_RATE=20000000"
        echo "FTPDROP_VSFTPDMTLS_TLS=explicit-required-client-cert"
        echo "FTPDROP_VSFTPDACTIVE_DATA=active-only"
        echo "FTPDROP_TLS_CLIENT_CERT=$DIR/tls/client.pem"
        echo "FTPDROP_TLS_CLIENT_KEY=$DIR/tls/client.key"
        echo "FTPDROP_PUREFTPD_TLS=explicit-optional"
        echo "FTPDROP_PROFTPDTLS_TLS=explicit-required-reuse-tls1.2-tls1.3"
        echo "FTPDROP_PROFTPDTLS12_TLS=explicit-required-reuse-tls1.2"
        echo "FTPDROP_PROFTPDIMPLICIT_TLS=implicit-required-reuse-tls1.3"
        echo "FTPDROP_PYQUIRKSTLS_TLS=explicit"
        echo "FTPDROP_PUREFTPD_TLS_NAMES=localhost"
        echo "FTPDROP_PUREFTPD_CHEAP_HASH=${FTPDROP_PUREFTPD_CHEAP_HASH:-0}"
    } >"$env"
    mv "$env" "$DIR/servers.env"
    trap - EXIT
    for entry in "${SERVERS[@]}"; do
        name="${entry%%:*}"
        printf '[interop] %-15s up on 127.0.0.1:%-5s pasv %s-%s  %s\n' "$name" \
            "${PORT[$name]}" "${PLO[$name]}" "${PHI[$name]}" \
            "$(head -c 60 "$DIR/$name/log/greeting.txt")" >&2
    done
    log "wrote $DIR/servers.env"
}

# ------------------------------------------------------------ stop/status ---

pid_of() {  # pid_of NAME -> pid if alive
    local f="$DIR/$1/run/pid" pid
    [ -f "$f" ] || return 1
    pid="$(cat "$f")"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

any_running() {
    local entry
    for entry in "${SERVERS[@]}"; do
        pid_of "${entry%%:*}" >/dev/null && return 0
    done
    return 1
}

cmd_stop() {
    DIR="$(resolve_dir "${1:-}")"
    local entry name pid pids=()
    for entry in "${SERVERS[@]}"; do
        name="${entry%%:*}"
        if pid="$(pid_of "$name")"; then
            # Each server runs in its own process group (setsid): this also
            # ends its per-connection children.
            kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
            log "stopping $name (pid $pid)"
        fi
    done
    local t
    for pid in "${pids[@]}"; do
        for t in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    for entry in "${SERVERS[@]}"; do
        rm -f "$DIR/${entry%%:*}/run/pid"
    done
    rm -f "$DIR/servers.env"
    return 0
}

cmd_status() {
    DIR="$(resolve_dir "${1:-}")"
    local entry name pid port rc=0 py
    py="$(pick_python)"
    for entry in "${SERVERS[@]}"; do
        name="${entry%%:*}"
            port="$(grep "^FTPDROP_${entry##*:}_PORT=" "$DIR/servers.env" 2>/dev/null \
                | cut -d= -f2 || true)"
        if pid="$(pid_of "$name")" && [ -n "$port" ] && \
           "$py" "$SCRIPT_DIR/ftptool.py" wait 127.0.0.1 "$port" 3 "" \
               "$([ "$name" = vsftpd-implicit ] && echo tls)" >/dev/null 2>&1; then
            printf '%-15s up    pid %-7s port %s\n' "$name" "$pid" "$port"
        else
            printf '%-15s down\n' "$name"
            rc=1
        fi
    done
    return "$rc"
}

case "${1:-}" in
    install) cmd_install ;;
    start) shift; cmd_start "${1:-}" ;;
    stop) shift; cmd_stop "${1:-}" ;;
    status) shift; cmd_status "${1:-}" ;;
    *) echo "usage: $0 install | start [DIR] | stop [DIR] | status [DIR]" >&2; exit 2 ;;
esac
