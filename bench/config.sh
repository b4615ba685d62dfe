# Sourced by the bench scripts: the one bench configuration.
#
# bench_config FILE PORT HASH DATA_DIR [TICKETS] [EXTRA]
#   writes FILE (and the SAML SP's metadata beside it): a server on
#   127.0.0.1:PORT, user `bench` (password hash HASH) with attributes, the
#   CAS service https://app.example.org/..., OIDC clients `bench` (RS256 ID
#   tokens) and `bench-es256`, and a SAML SP (nothing is ever posted to it).
#   TICKETS: lines for the [tickets] table; EXTRA: TOML appended at the end.
bench_config() {
    local file=$1 port=$2 hash=$3 data=$4 tickets=${5:-} extra=${6:-}
    local sp="${file%.toml}-sp.xml"
    mkdir -p "$data"
    cat >"$sp" <<'EOM'
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="https://sp.example.org/shibboleth">
  <md:SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="https://sp.example.org/Shibboleth.sso/SAML2/POST" index="1"/>
  </md:SPSSODescriptor>
</md:EntityDescriptor>
EOM
    cat >"$file" <<EOC
[server]
listen = "127.0.0.1:$port"
public_url = "http://127.0.0.1:$port/cas"
data_dir = "$data"

[tickets]
$tickets

[throttle]
failures_per_user = 1000000
failures_per_ip = 1000000

[[users]]
username = "bench"
password_hash = "$hash"
attributes = { mail = "bench@example.org", cn = "Bench User", memberOf = ["staff", "faculty"] }

[[services]]
name = "app"
protocol = "cas"
service = '^https://app\.example\.org/.*\$'
release = ["mail", "cn", "memberOf"]

[[services]]
name = "bench-rp"
protocol = "oidc"
client_id = "bench"
client_secret = "bench-secret"
redirect_uris = ["https://rp.example.org/callback"]
scopes = ["openid", "profile", "email", "api"]
release = ["mail", "cn"]

[[services]]
name = "bench-rp-es256"
protocol = "oidc"
client_id = "bench-es256"
client_secret = "bench-secret"
redirect_uris = ["https://rp.example.org/callback"]
scopes = ["openid", "profile", "email", "api"]
release = ["mail", "cn"]
id_token_signing_alg = "ES256"

[[services]]
name = "bench-sp"
protocol = "saml"
metadata = "$sp"
release = ["mail", "cn", "memberOf"]
$extra
EOC
}

# bench_setup NAME PORT: a work directory, removed at exit with the server
# whose pid is in $PID stopped; the cheap password hash; the bench
# configuration in $WORK/NAME.toml. Needs $LG (tools/loadgen). Sets WORK,
# PID and HASH.
bench_setup() {
    WORK=$(mktemp -d -t "castellan-$1.XXXXXX")
    PID=
    trap 'if [[ -n "$PID" ]]; then kill "$PID" 2>/dev/null; fi; rm -rf "$WORK"' EXIT
    HASH=$("$LG" hash --cheap --password bench-password)
    bench_config "$WORK/$1.toml" "$2" "$HASH" "$WORK/data"
}

# rsa_speed [ARGS]: RSA-2048 signatures/s from `openssl speed` (3 s), e.g.
# `rsa_speed -multi 2` on two CPUs: the limit of the signing flows.
rsa_speed() {
    openssl speed -seconds 3 "$@" rsa2048 2>/dev/null |
        awk '/^rsa 2048 bits/ {print $(NF - 1); exit}'
}
