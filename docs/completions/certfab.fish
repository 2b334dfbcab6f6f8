# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_certfab_global_optspecs
    string join \n config= json h/help V/version
end

function __fish_certfab_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_certfab_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_certfab_using_subcommand
    set -l cmd (__fish_certfab_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c certfab -n "__fish_certfab_needs_command" -l config -d 'Site config (certfab.yaml). Also CERTFAB_CONFIG' -r -F
complete -c certfab -n "__fish_certfab_needs_command" -l json -d 'Print a machine-readable JSON result on stdout; messages go to stderr'
complete -c certfab -n "__fish_certfab_needs_command" -s h -l help -d 'Print help'
complete -c certfab -n "__fish_certfab_needs_command" -s V -l version -d 'Print version'
complete -c certfab -n "__fish_certfab_needs_command" -f -a "hsm" -d 'Inspect and measure the PKCS#11 token'
complete -c certfab -n "__fish_certfab_needs_command" -f -a "ca" -d 'CA key ceremony: generate keys in the token, self-sign, CSR, sign, import'
complete -c certfab -n "__fish_certfab_needs_command" -f -a "issue" -d 'Issue one device certificate'
complete -c certfab -n "__fish_certfab_needs_command" -f -a "batch" -d 'Issue for many devices with a crash-safe ledger; `batch status`, `batch resume`'
complete -c certfab -n "__fish_certfab_needs_command" -f -a "station" -d 'Run a station: identify, sign, install, prove and lock devices one after another'
complete -c certfab -n "__fish_certfab_needs_command" -f -a "revoke" -d 'Revoke a device\'s certificate (or one by serial); `revoke list` for cloud exports'
complete -c certfab -n "__fish_certfab_needs_command" -f -a "crl" -d 'Make a CRL signed by a CA key in the HSM'
complete -c certfab -n "__fish_certfab_needs_command" -f -a "renew" -d 'Rotate a device\'s key in the field: a new certificate that supersedes the old'
complete -c certfab -n "__fish_certfab_needs_command" -f -a "log" -d 'The tamper-evident audit log: signed checkpoints, verification, events'
complete -c certfab -n "__fish_certfab_needs_command" -f -a "ledger" -d 'The ledger itself: import a station\'s SQLite ledger into the central one; burn a dead process\'s intents'
complete -c certfab -n "__fish_certfab_needs_command" -f -a "manifest" -d 'Signed manifests of batches and shifts: build, verify, show, merge'
complete -c certfab -n "__fish_certfab_needs_command" -f -a "export" -d 'Cloud pre-registration files from a verified manifest (docs/exports.md)'
complete -c certfab -n "__fish_certfab_needs_command" -f -a "audit" -d 'Cross-check ledgers, manifests, certificate files and CA certificates; report findings (text, --json, --html) and exit 3 when one is at or above --fail-on'
complete -c certfab -n "__fish_certfab_needs_command" -f -a "profile" -d 'Device-class profiles: `profile show P` prints one resolved, every default visible'
complete -c certfab -n "__fish_certfab_needs_command" -f -a "completions" -d 'Print a shell completion script (bash, zsh or fish) on stdout'
complete -c certfab -n "__fish_certfab_needs_command" -f -a "man" -d 'Write the man pages (one per command) into a directory; for packaging and docs/man'
complete -c certfab -n "__fish_certfab_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c certfab -n "__fish_certfab_using_subcommand hsm; and not __fish_seen_subcommand_from init-token info bench help" -l config -d 'Site config (certfab.yaml). Also CERTFAB_CONFIG' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand hsm; and not __fish_seen_subcommand_from init-token info bench help" -l json -d 'Print a machine-readable JSON result on stdout; messages go to stderr'
complete -c certfab -n "__fish_certfab_using_subcommand hsm; and not __fish_seen_subcommand_from init-token info bench help" -s h -l help -d 'Print help'
complete -c certfab -n "__fish_certfab_using_subcommand hsm; and not __fish_seen_subcommand_from init-token info bench help" -f -a "init-token" -d 'Initialise a new token in a free slot (development/test lines). PINs come from env:NAME or file:PATH sources, never from the command line'
complete -c certfab -n "__fish_certfab_using_subcommand hsm; and not __fish_seen_subcommand_from init-token info bench help" -f -a "info" -d 'List slots, tokens, mechanisms and key objects (public attributes only; never the PIN)'
complete -c certfab -n "__fish_certfab_using_subcommand hsm; and not __fish_seen_subcommand_from init-token info bench help" -f -a "bench" -d 'Measure the token\'s raw signing rate with 1..N sessions'
complete -c certfab -n "__fish_certfab_using_subcommand hsm; and not __fish_seen_subcommand_from init-token info bench help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c certfab -n "__fish_certfab_using_subcommand hsm; and __fish_seen_subcommand_from init-token" -l label -d 'Token label' -r
complete -c certfab -n "__fish_certfab_using_subcommand hsm; and __fish_seen_subcommand_from init-token" -l so-pin -d 'Security officer PIN source (env:NAME, file:PATH, prompt)' -r
complete -c certfab -n "__fish_certfab_using_subcommand hsm; and __fish_seen_subcommand_from init-token" -l pin -d 'User PIN source (env:NAME, file:PATH, prompt)' -r
complete -c certfab -n "__fish_certfab_using_subcommand hsm; and __fish_seen_subcommand_from init-token" -l config -d 'Site config (certfab.yaml). Also CERTFAB_CONFIG' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand hsm; and __fish_seen_subcommand_from init-token" -l json -d 'Print a machine-readable JSON result on stdout; messages go to stderr'
complete -c certfab -n "__fish_certfab_using_subcommand hsm; and __fish_seen_subcommand_from init-token" -s h -l help -d 'Print help'
complete -c certfab -n "__fish_certfab_using_subcommand hsm; and __fish_seen_subcommand_from info" -l config -d 'Site config (certfab.yaml). Also CERTFAB_CONFIG' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand hsm; and __fish_seen_subcommand_from info" -l no-login -d 'Do not log in: list public objects only'
complete -c certfab -n "__fish_certfab_using_subcommand hsm; and __fish_seen_subcommand_from info" -l json -d 'Print a machine-readable JSON result on stdout; messages go to stderr'
complete -c certfab -n "__fish_certfab_using_subcommand hsm; and __fish_seen_subcommand_from info" -s h -l help -d 'Print help'
complete -c certfab -n "__fish_certfab_using_subcommand hsm; and __fish_seen_subcommand_from bench" -l key -d 'Key: a pkcs11: URI, a label on the site token, or a CA name from the site config' -r
complete -c certfab -n "__fish_certfab_using_subcommand hsm; and __fish_seen_subcommand_from bench" -l sessions -d 'Session counts to measure, e.g. 1,2,4' -r
complete -c certfab -n "__fish_certfab_using_subcommand hsm; and __fish_seen_subcommand_from bench" -l seconds -d 'Seconds per measurement' -r
complete -c certfab -n "__fish_certfab_using_subcommand hsm; and __fish_seen_subcommand_from bench" -l config -d 'Site config (certfab.yaml). Also CERTFAB_CONFIG' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand hsm; and __fish_seen_subcommand_from bench" -l json -d 'Print a machine-readable JSON result on stdout; messages go to stderr'
complete -c certfab -n "__fish_certfab_using_subcommand hsm; and __fish_seen_subcommand_from bench" -s h -l help -d 'Print help'
complete -c certfab -n "__fish_certfab_using_subcommand hsm; and __fish_seen_subcommand_from help" -f -a "init-token" -d 'Initialise a new token in a free slot (development/test lines). PINs come from env:NAME or file:PATH sources, never from the command line'
complete -c certfab -n "__fish_certfab_using_subcommand hsm; and __fish_seen_subcommand_from help" -f -a "info" -d 'List slots, tokens, mechanisms and key objects (public attributes only; never the PIN)'
complete -c certfab -n "__fish_certfab_using_subcommand hsm; and __fish_seen_subcommand_from help" -f -a "bench" -d 'Measure the token\'s raw signing rate with 1..N sessions'
complete -c certfab -n "__fish_certfab_using_subcommand hsm; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c certfab -n "__fish_certfab_using_subcommand ca; and not __fish_seen_subcommand_from keygen selfsign csr sign verification-cert import status bundle help" -l config -d 'Site config (certfab.yaml). Also CERTFAB_CONFIG' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand ca; and not __fish_seen_subcommand_from keygen selfsign csr sign verification-cert import status bundle help" -l json -d 'Print a machine-readable JSON result on stdout; messages go to stderr'
complete -c certfab -n "__fish_certfab_using_subcommand ca; and not __fish_seen_subcommand_from keygen selfsign csr sign verification-cert import status bundle help" -s h -l help -d 'Print help'
complete -c certfab -n "__fish_certfab_using_subcommand ca; and not __fish_seen_subcommand_from keygen selfsign csr sign verification-cert import status bundle help" -f -a "keygen" -d 'Generate a CA key pair inside the token (non-extractable, sensitive, sign-only)'
complete -c certfab -n "__fish_certfab_using_subcommand ca; and not __fish_seen_subcommand_from keygen selfsign csr sign verification-cert import status bundle help" -f -a "selfsign" -d 'Self-sign a root CA certificate with a key in the token'
complete -c certfab -n "__fish_certfab_using_subcommand ca; and not __fish_seen_subcommand_from keygen selfsign csr sign verification-cert import status bundle help" -f -a "csr" -d 'Make a CSR for a CA whose key is in the token (for signing by a root here or offline)'
complete -c certfab -n "__fish_certfab_using_subcommand ca; and not __fish_seen_subcommand_from keygen selfsign csr sign verification-cert import status bundle help" -f -a "sign" -d 'Sign a subordinate CA certificate (or, with --end-entity, a manifest/audit signer\'s certificate) with a CA key in the token'
complete -c certfab -n "__fish_certfab_using_subcommand ca; and not __fish_seen_subcommand_from keygen selfsign csr sign verification-cert import status bundle help" -f -a "verification-cert" -d 'Sign a proof-of-possession certificate (CN = a cloud\'s registration/verification code) with a CA\'s key in the token, for AWS IoT RegisterCACertificate or Azure DPS verify'
complete -c certfab -n "__fish_certfab_using_subcommand ca; and not __fish_seen_subcommand_from keygen selfsign csr sign verification-cert import status bundle help" -f -a "import" -d 'Store a CA certificate on the token beside its key, after checking they match'
complete -c certfab -n "__fish_certfab_using_subcommand ca; and not __fish_seen_subcommand_from keygen selfsign csr sign verification-cert import status bundle help" -f -a "status" -d 'Every configured CA: expiry, dependants in the ledger, rollover, warnings (no token needed)'
complete -c certfab -n "__fish_certfab_using_subcommand ca; and not __fish_seen_subcommand_from keygen selfsign csr sign verification-cert import status bundle help" -f -a "bundle" -d 'Write the trust bundle for a profile: its issuer\'s chain and, during a rollover, the next issuer\'s (no token needed)'
complete -c certfab -n "__fish_certfab_using_subcommand ca; and not __fish_seen_subcommand_from keygen selfsign csr sign verification-cert import status bundle help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from keygen" -l key -d 'pkcs11: URI or label for the new key (object=LABEL)' -r
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from keygen" -l algorithm -d 'Key algorithm' -r -f -a "p256\t'ECDSA on NIST P-256'
p384\t'ECDSA on NIST P-384'
rsa2048\t'RSA 2048'
rsa3072\t'RSA 3072'
rsa4096\t'RSA 4096'"
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from keygen" -l config -d 'Site config (certfab.yaml). Also CERTFAB_CONFIG' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from keygen" -l json -d 'Print a machine-readable JSON result on stdout; messages go to stderr'
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from keygen" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from selfsign" -l key -d 'The root\'s key (pkcs11: URI or label)' -r
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from selfsign" -l subject -d 'Subject DN, RFC 4514 (e.g. "CN=Acme Device Root,O=Acme")' -r
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from selfsign" -l validity -d 'Lifetime (e.g. 20y) or "none" for 99991231235959Z' -r
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from selfsign" -l not-before -d 'notBefore, RFC 3339 (default: now)' -r
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from selfsign" -l path-len -d 'pathLenConstraint' -r
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from selfsign" -l out -d 'Output PEM file (must not exist)' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from selfsign" -l config -d 'Site config (certfab.yaml). Also CERTFAB_CONFIG' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from selfsign" -l json -d 'Print a machine-readable JSON result on stdout; messages go to stderr'
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from selfsign" -s h -l help -d 'Print help'
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from csr" -l key -d 'The key (pkcs11: URI or label)' -r
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from csr" -l subject -d 'Subject DN, RFC 4514' -r
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from csr" -l out -d 'Output PEM file' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from csr" -l config -d 'Site config (certfab.yaml). Also CERTFAB_CONFIG' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from csr" -l json -d 'Print a machine-readable JSON result on stdout; messages go to stderr'
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from csr" -s h -l help -d 'Print help'
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from sign" -l issuer-key -d 'Issuing CA\'s key (pkcs11: URI, label, or CA name from the site config)' -r
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from sign" -l issuer-cert -d 'Issuing CA\'s certificate (default: the named CA\'s from the site config)' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from sign" -l csr -d 'The subordinate\'s CSR' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from sign" -l subject -d 'Override the CSR\'s subject (RFC 4514)' -r
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from sign" -l validity -d 'Lifetime, or "none" (only under a no-expiry issuer)' -r
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from sign" -l not-before -d 'notBefore, RFC 3339 (default: now)' -r
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from sign" -l path-len -d 'pathLenConstraint (0 for an issuing CA that signs only devices)' -r
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from sign" -l out -d 'Output PEM file' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from sign" -l config -d 'Site config (certfab.yaml). Also CERTFAB_CONFIG' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from sign" -l end-entity -d 'Sign an end-entity certificate (CA:FALSE, keyUsage digitalSignature only) for a document-signing key such as the manifest signer, instead of a CA certificate'
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from sign" -l json -d 'Print a machine-readable JSON result on stdout; messages go to stderr'
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from sign" -s h -l help -d 'Print help'
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from verification-cert" -l ca -d 'CA name from the site config (its key signs, its certificate is the issuer)' -r
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from verification-cert" -l cn -d 'The code: AWS `aws iot get-registration-code`, Azure DPS generateVerificationCode' -r
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from verification-cert" -l validity -d 'Lifetime (the cloud checks it once, at registration)' -r
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from verification-cert" -l out -d 'Output PEM file (must not exist)' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from verification-cert" -l config -d 'Site config (certfab.yaml). Also CERTFAB_CONFIG' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from verification-cert" -l json -d 'Print a machine-readable JSON result on stdout; messages go to stderr'
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from verification-cert" -s h -l help -d 'Print help'
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from import" -l key -d 'The key (pkcs11: URI or label)' -r
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from import" -l cert -d 'The certificate (PEM or DER)' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from import" -l config -d 'Site config (certfab.yaml). Also CERTFAB_CONFIG' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from import" -l json -d 'Print a machine-readable JSON result on stdout; messages go to stderr'
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from import" -s h -l help -d 'Print help'
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from status" -l warn-days -d 'Warn when a CA expires within this many days' -r
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from status" -l config -d 'Site config (certfab.yaml). Also CERTFAB_CONFIG' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from status" -l json -d 'Print a machine-readable JSON result on stdout; messages go to stderr'
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from status" -s h -l help -d 'Print help'
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from bundle" -l profile -d 'The profile' -r
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from bundle" -l out -d 'Output PEM file (must not exist)' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from bundle" -l config -d 'Site config (certfab.yaml). Also CERTFAB_CONFIG' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from bundle" -l json -d 'Print a machine-readable JSON result on stdout; messages go to stderr'
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from bundle" -s h -l help -d 'Print help'
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from help" -f -a "keygen" -d 'Generate a CA key pair inside the token (non-extractable, sensitive, sign-only)'
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from help" -f -a "selfsign" -d 'Self-sign a root CA certificate with a key in the token'
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from help" -f -a "csr" -d 'Make a CSR for a CA whose key is in the token (for signing by a root here or offline)'
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from help" -f -a "sign" -d 'Sign a subordinate CA certificate (or, with --end-entity, a manifest/audit signer\'s certificate) with a CA key in the token'
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from help" -f -a "verification-cert" -d 'Sign a proof-of-possession certificate (CN = a cloud\'s registration/verification code) with a CA\'s key in the token, for AWS IoT RegisterCACertificate or Azure DPS verify'
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from help" -f -a "import" -d 'Store a CA certificate on the token beside its key, after checking they match'
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from help" -f -a "status" -d 'Every configured CA: expiry, dependants in the ledger, rollover, warnings (no token needed)'
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from help" -f -a "bundle" -d 'Write the trust bundle for a profile: its issuer\'s chain and, during a rollover, the next issuer\'s (no token needed)'
complete -c certfab -n "__fish_certfab_using_subcommand ca; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c certfab -n "__fish_certfab_using_subcommand issue" -l profile -d 'Device-class profile: a path, or a name in the site\'s profiles_dir' -r
complete -c certfab -n "__fish_certfab_using_subcommand issue" -l csr -d 'The device\'s CSR (PEM or DER); its self-signature is verified' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand issue" -l pubkey -d 'The device\'s public key (SPKI PEM or DER), when it cannot make a CSR' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand issue" -l device-id -d 'Device id (default: per the profile\'s device_id.from)' -r
complete -c certfab -n "__fish_certfab_using_subcommand issue" -l var -d 'Template value for {var.NAME}: NAME=VALUE (repeatable)' -r
complete -c certfab -n "__fish_certfab_using_subcommand issue" -l out -d 'Output directory: cert.pem (leaf) and chain.pem (leaf, issuing CA[, …])' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand issue" -l config -d 'Site config (certfab.yaml). Also CERTFAB_CONFIG' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand issue" -l with-root -d 'Also put the root (last certificate of the configured chain) into chain.pem'
complete -c certfab -n "__fish_certfab_using_subcommand issue" -l dry-run -d 'Run every check and the lint and print the would-be certificate; reserve, sign and write nothing (no token or PIN needed). With --out, also check that the files are free'
complete -c certfab -n "__fish_certfab_using_subcommand issue" -l json -d 'Print a machine-readable JSON result on stdout; messages go to stderr'
complete -c certfab -n "__fish_certfab_using_subcommand issue" -s h -l help -d 'Print help'
complete -c certfab -n "__fish_certfab_using_subcommand batch; and not __fish_seen_subcommand_from status close resume help" -l profile -d 'Device-class profile (path or name)' -r
complete -c certfab -n "__fish_certfab_using_subcommand batch; and not __fish_seen_subcommand_from status close resume help" -l input -d 'CSV with a header: device_id plus csr or pubkey (path relative to the CSV, or PEM)' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand batch; and not __fish_seen_subcommand_from status close resume help" -l csr-dir -d 'A directory of CSRs (*.csr, *.pem, *.der); device id per the profile\'s device_id.from' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand batch; and not __fish_seen_subcommand_from status close resume help" -l input-root -d 'The directory that CSV key paths (and --csr-dir files and their links) must resolve inside. Default: the CSV\'s directory, or the --csr-dir itself' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand batch; and not __fish_seen_subcommand_from status close resume help" -l count -d 'Issue for N devices whose keys certfab generates (needs --keygen host)' -r
complete -c certfab -n "__fish_certfab_using_subcommand batch; and not __fish_seen_subcommand_from status close resume help" -l id-template -d 'Device ids for --count: {seq} or {seq:0N} is the sequence number from 1' -r
complete -c certfab -n "__fish_certfab_using_subcommand batch; and not __fish_seen_subcommand_from status close resume help" -l keygen -d 'Where device keys are generated: only `host` (this machine\'s CSPRNG)' -r -f -a "host\t''"
complete -c certfab -n "__fish_certfab_using_subcommand batch; and not __fish_seen_subcommand_from status close resume help" -l out -d 'Output directory: OUT/<device_id>/{cert.pem,chain.pem,device.json[,key.pem]}, or OUT/bundle-NNNNN.jsonl with --layout bundle' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand batch; and not __fish_seen_subcommand_from status close resume help" -l layout -d 'Output layout: `dirs` (a directory per device) or `bundle` (JSON lines files, one line per device, a new file every --bundle-size input rows)' -r -f -a "dirs\t''
bundle\t''"
complete -c certfab -n "__fish_certfab_using_subcommand batch; and not __fish_seen_subcommand_from status close resume help" -l bundle-size -d 'Input rows per bundle file with --layout bundle' -r
complete -c certfab -n "__fish_certfab_using_subcommand batch; and not __fish_seen_subcommand_from status close resume help" -l jobs -d 'Signing workers, one HSM session each' -r
complete -c certfab -n "__fish_certfab_using_subcommand batch; and not __fish_seen_subcommand_from status close resume help" -l key-passphrase -d 'Passphrase source for generated keys: env:NAME or file:PATH' -r
complete -c certfab -n "__fish_certfab_using_subcommand batch; and not __fish_seen_subcommand_from status close resume help" -l kdf-iterations -d 'PBKDF2-SHA256 iterations for encrypted keys' -r
complete -c certfab -n "__fish_certfab_using_subcommand batch; and not __fish_seen_subcommand_from status close resume help" -l manifest -d 'When the batch completes, build its signed manifest here (FILE and FILE.jws), as `certfab manifest build --batch ID --out FILE` would. Checked before anything is signed' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand batch; and not __fish_seen_subcommand_from status close resume help" -l config -d 'Site config (certfab.yaml). Also CERTFAB_CONFIG' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand batch; and not __fish_seen_subcommand_from status close resume help" -l plain-keys -d 'Write generated keys unencrypted (explicit; otherwise --key-passphrase is required)'
complete -c certfab -n "__fish_certfab_using_subcommand batch; and not __fish_seen_subcommand_from status close resume help" -l dry-run -d 'Read the whole input and run every check, the lint and the ledger\'s identity rules per row; report which rows a run would refuse and why. Nothing is reserved, signed or written (no token or PIN needed)'
complete -c certfab -n "__fish_certfab_using_subcommand batch; and not __fish_seen_subcommand_from status close resume help" -l json -d 'Print a machine-readable JSON result on stdout; messages go to stderr'
complete -c certfab -n "__fish_certfab_using_subcommand batch; and not __fish_seen_subcommand_from status close resume help" -s h -l help -d 'Print help'
complete -c certfab -n "__fish_certfab_using_subcommand batch; and not __fish_seen_subcommand_from status close resume help" -f -a "status" -d 'Counts by state and the rejected rows of a batch (default: the latest)'
complete -c certfab -n "__fish_certfab_using_subcommand batch; and not __fish_seen_subcommand_from status close resume help" -f -a "close" -d 'Close a batch that will not be resumed (its input is gone or was wrong): it is marked finished and the reason is recorded in the audit log. What it issued stays issued'
complete -c certfab -n "__fish_certfab_using_subcommand batch; and not __fish_seen_subcommand_from status close resume help" -f -a "resume" -d 'Continue a batch from the ledger (same input, profile and output as it started with)'
complete -c certfab -n "__fish_certfab_using_subcommand batch; and not __fish_seen_subcommand_from status close resume help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c certfab -n "__fish_certfab_using_subcommand batch; and __fish_seen_subcommand_from status" -l config -d 'Site config (certfab.yaml). Also CERTFAB_CONFIG' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand batch; and __fish_seen_subcommand_from status" -l json -d 'Print a machine-readable JSON result on stdout; messages go to stderr'
complete -c certfab -n "__fish_certfab_using_subcommand batch; and __fish_seen_subcommand_from status" -s h -l help -d 'Print help'
complete -c certfab -n "__fish_certfab_using_subcommand batch; and __fish_seen_subcommand_from close" -l reason -d 'Why it is closed (recorded in the audit log)' -r
complete -c certfab -n "__fish_certfab_using_subcommand batch; and __fish_seen_subcommand_from close" -l config -d 'Site config (certfab.yaml). Also CERTFAB_CONFIG' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand batch; and __fish_seen_subcommand_from close" -l json -d 'Print a machine-readable JSON result on stdout; messages go to stderr'
complete -c certfab -n "__fish_certfab_using_subcommand batch; and __fish_seen_subcommand_from close" -s h -l help -d 'Print help'
complete -c certfab -n "__fish_certfab_using_subcommand batch; and __fish_seen_subcommand_from resume" -l jobs -d 'Signing workers, one HSM session each' -r
complete -c certfab -n "__fish_certfab_using_subcommand batch; and __fish_seen_subcommand_from resume" -l key-passphrase -d 'Passphrase source for generated keys: env:NAME or file:PATH' -r
complete -c certfab -n "__fish_certfab_using_subcommand batch; and __fish_seen_subcommand_from resume" -l kdf-iterations -d 'PBKDF2-SHA256 iterations for encrypted keys' -r
complete -c certfab -n "__fish_certfab_using_subcommand batch; and __fish_seen_subcommand_from resume" -l manifest -d 'When the batch completes, build its signed manifest here (FILE and FILE.jws), as `certfab manifest build --batch ID --out FILE` would. Checked before anything is signed' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand batch; and __fish_seen_subcommand_from resume" -l config -d 'Site config (certfab.yaml). Also CERTFAB_CONFIG' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand batch; and __fish_seen_subcommand_from resume" -l json -d 'Print a machine-readable JSON result on stdout; messages go to stderr'
complete -c certfab -n "__fish_certfab_using_subcommand batch; and __fish_seen_subcommand_from resume" -s h -l help -d 'Print help'
complete -c certfab -n "__fish_certfab_using_subcommand batch; and __fish_seen_subcommand_from help" -f -a "status" -d 'Counts by state and the rejected rows of a batch (default: the latest)'
complete -c certfab -n "__fish_certfab_using_subcommand batch; and __fish_seen_subcommand_from help" -f -a "close" -d 'Close a batch that will not be resumed (its input is gone or was wrong): it is marked finished and the reason is recorded in the audit log. What it issued stays issued'
complete -c certfab -n "__fish_certfab_using_subcommand batch; and __fish_seen_subcommand_from help" -f -a "resume" -d 'Continue a batch from the ledger (same input, profile and output as it started with)'
complete -c certfab -n "__fish_certfab_using_subcommand batch; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c certfab -n "__fish_certfab_using_subcommand station" -l profile -d 'Device-class profile: a path, or a name in the site\'s profiles_dir' -r
complete -c certfab -n "__fish_certfab_using_subcommand station" -l adapter -d 'The station adapter: exec:PROGRAM [ARGS], serial:/dev/ttyX?baud=N or tcp:HOST:PORT' -r
complete -c certfab -n "__fish_certfab_using_subcommand station" -l operator -d 'Who runs the station (recorded with every device). Also CERTFAB_OPERATOR' -r
complete -c certfab -n "__fish_certfab_using_subcommand station" -l manifest -d 'When the shift ends, build its signed manifest here (FILE and FILE.jws), as `certfab manifest build --batch SHIFT --out FILE` would. Checked before the first device' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand station" -l config -d 'Site config (certfab.yaml). Also CERTFAB_CONFIG' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand station" -l once -d 'Handle one device, then exit (0 PASS, 6 FAIL, 3 refused)'
complete -c certfab -n "__fish_certfab_using_subcommand station" -l supersede -d 'Give a device that comes back with a different key a new identity (the old certificate is marked superseded in the ledger)'
complete -c certfab -n "__fish_certfab_using_subcommand station" -s v -l verbose -d 'Also show the adapter\'s debug and info log lines on stderr (warnings, errors and an exec adapter\'s stderr are always shown); at most 256 lines per request'
complete -c certfab -n "__fish_certfab_using_subcommand station" -l json -d 'Print a machine-readable JSON result on stdout; messages go to stderr'
complete -c certfab -n "__fish_certfab_using_subcommand station" -s h -l help -d 'Print help'
complete -c certfab -n "__fish_certfab_using_subcommand revoke; and not __fish_seen_subcommand_from list help" -l device -d 'Revoke this device\'s current certificate' -r
complete -c certfab -n "__fish_certfab_using_subcommand revoke; and not __fish_seen_subcommand_from list help" -l profile -d 'The device\'s profile (needed when the device id is in several)' -r
complete -c certfab -n "__fish_certfab_using_subcommand revoke; and not __fish_seen_subcommand_from list help" -l serial -d 'Revoke the certificate with this serial (hex; current or superseded)' -r
complete -c certfab -n "__fish_certfab_using_subcommand revoke; and not __fish_seen_subcommand_from list help" -l reason -d 'RFC 5280 reason: keyCompromise, cACompromise, affiliationChanged, superseded, cessationOfOperation, privilegeWithdrawn or unspecified' -r
complete -c certfab -n "__fish_certfab_using_subcommand revoke; and not __fish_seen_subcommand_from list help" -l comment -d 'Free text recorded with the revocation in the audit log' -r
complete -c certfab -n "__fish_certfab_using_subcommand revoke; and not __fish_seen_subcommand_from list help" -l config -d 'Site config (certfab.yaml). Also CERTFAB_CONFIG' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand revoke; and not __fish_seen_subcommand_from list help" -l json -d 'Print a machine-readable JSON result on stdout; messages go to stderr'
complete -c certfab -n "__fish_certfab_using_subcommand revoke; and not __fish_seen_subcommand_from list help" -s h -l help -d 'Print help'
complete -c certfab -n "__fish_certfab_using_subcommand revoke; and not __fish_seen_subcommand_from list help" -f -a "list" -d 'List revoked certificates, or the cloud operations that revoke them'
complete -c certfab -n "__fish_certfab_using_subcommand revoke; and not __fish_seen_subcommand_from list help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c certfab -n "__fish_certfab_using_subcommand revoke; and __fish_seen_subcommand_from list" -l profile -d 'Only this profile' -r
complete -c certfab -n "__fish_certfab_using_subcommand revoke; and __fish_seen_subcommand_from list" -l tenant -d 'Only this tenant (required when the ledger holds several)' -r
complete -c certfab -n "__fish_certfab_using_subcommand revoke; and __fish_seen_subcommand_from list" -l format -d 'json (entries), aws (update-certificate script) or azure (DPS bulk bodies)' -r -f -a "json\t'The entries as JSON'
aws\t'`aws iot update-certificate --new-status REVOKED` lines'
azure\t'Azure DPS bulk enrollment bodies disabling each device'"
complete -c certfab -n "__fish_certfab_using_subcommand revoke; and __fish_seen_subcommand_from list" -l out -d 'Write to this file (must not exist) instead of stdout' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand revoke; and __fish_seen_subcommand_from list" -l config -d 'Site config (certfab.yaml). Also CERTFAB_CONFIG' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand revoke; and __fish_seen_subcommand_from list" -l json -d 'Print a machine-readable JSON result on stdout; messages go to stderr'
complete -c certfab -n "__fish_certfab_using_subcommand revoke; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c certfab -n "__fish_certfab_using_subcommand revoke; and __fish_seen_subcommand_from help" -f -a "list" -d 'List revoked certificates, or the cloud operations that revoke them'
complete -c certfab -n "__fish_certfab_using_subcommand revoke; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c certfab -n "__fish_certfab_using_subcommand crl" -l profile -d 'The CA that signs for this profile now' -r
complete -c certfab -n "__fish_certfab_using_subcommand crl" -l ca -d 'A CA by its site config name (e.g. the old CA during a rollover)' -r
complete -c certfab -n "__fish_certfab_using_subcommand crl" -l next-update -d 'How long until nextUpdate (e.g. 7d, 12h)' -r
complete -c certfab -n "__fish_certfab_using_subcommand crl" -l out -d 'Output file (must not exist)' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand crl" -l config -d 'Site config (certfab.yaml). Also CERTFAB_CONFIG' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand crl" -l der -d 'Write DER instead of PEM'
complete -c certfab -n "__fish_certfab_using_subcommand crl" -l json -d 'Print a machine-readable JSON result on stdout; messages go to stderr'
complete -c certfab -n "__fish_certfab_using_subcommand crl" -s h -l help -d 'Print help'
complete -c certfab -n "__fish_certfab_using_subcommand renew" -l device -d 'The device (must have a certificate in the ledger and not be revoked)' -r
complete -c certfab -n "__fish_certfab_using_subcommand renew" -l profile -d 'Its profile (default: the one profile the device has a certificate in)' -r
complete -c certfab -n "__fish_certfab_using_subcommand renew" -l csr -d 'The device\'s CSR for its new key (PEM or DER)' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand renew" -l var -d 'Template value for {var.NAME}: NAME=VALUE (repeatable)' -r
complete -c certfab -n "__fish_certfab_using_subcommand renew" -l out -d 'Output directory: cert.pem and chain.pem of the new certificate' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand renew" -l config -d 'Site config (certfab.yaml). Also CERTFAB_CONFIG' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand renew" -l with-root -d 'Also put the root into chain.pem'
complete -c certfab -n "__fish_certfab_using_subcommand renew" -l json -d 'Print a machine-readable JSON result on stdout; messages go to stderr'
complete -c certfab -n "__fish_certfab_using_subcommand renew" -s h -l help -d 'Print help'
complete -c certfab -n "__fish_certfab_using_subcommand log; and not __fish_seen_subcommand_from checkpoint verify show help" -l config -d 'Site config (certfab.yaml). Also CERTFAB_CONFIG' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand log; and not __fish_seen_subcommand_from checkpoint verify show help" -l json -d 'Print a machine-readable JSON result on stdout; messages go to stderr'
complete -c certfab -n "__fish_certfab_using_subcommand log; and not __fish_seen_subcommand_from checkpoint verify show help" -s h -l help -d 'Print help'
complete -c certfab -n "__fish_certfab_using_subcommand log; and not __fish_seen_subcommand_from checkpoint verify show help" -f -a "checkpoint" -d 'Sign the current head of the audit chain in the HSM (the manifest/audit signer)'
complete -c certfab -n "__fish_certfab_using_subcommand log; and not __fish_seen_subcommand_from checkpoint verify show help" -f -a "verify" -d 'Check the audit chain from its first event and every checkpoint signature'
complete -c certfab -n "__fish_certfab_using_subcommand log; and not __fish_seen_subcommand_from checkpoint verify show help" -f -a "show" -d 'Print audit events as JSON lines (a JSON array with --json)'
complete -c certfab -n "__fish_certfab_using_subcommand log; and not __fish_seen_subcommand_from checkpoint verify show help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c certfab -n "__fish_certfab_using_subcommand log; and __fish_seen_subcommand_from checkpoint" -l out -d 'Also write the signed checkpoint to this file (must not exist), to keep elsewhere' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand log; and __fish_seen_subcommand_from checkpoint" -l config -d 'Site config (certfab.yaml). Also CERTFAB_CONFIG' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand log; and __fish_seen_subcommand_from checkpoint" -l json -d 'Print a machine-readable JSON result on stdout; messages go to stderr'
complete -c certfab -n "__fish_certfab_using_subcommand log; and __fish_seen_subcommand_from checkpoint" -s h -l help -d 'Print help'
complete -c certfab -n "__fish_certfab_using_subcommand log; and __fish_seen_subcommand_from verify" -l checkpoint -d 'A checkpoint file exported earlier (repeatable): also checked, and catches checkpoints removed from the ledger' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand log; and __fish_seen_subcommand_from verify" -l trust -d 'Trusted root(s), PEM (default: the site config\'s roots)' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand log; and __fish_seen_subcommand_from verify" -l signer-cert -d 'The audit signer\'s certificate checkpoints must be signed by (default: the site config\'s signer.cert)' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand log; and __fish_seen_subcommand_from verify" -l config -d 'Site config (certfab.yaml). Also CERTFAB_CONFIG' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand log; and __fish_seen_subcommand_from verify" -l json -d 'Print a machine-readable JSON result on stdout; messages go to stderr'
complete -c certfab -n "__fish_certfab_using_subcommand log; and __fish_seen_subcommand_from verify" -s h -l help -d 'Print help'
complete -c certfab -n "__fish_certfab_using_subcommand log; and __fish_seen_subcommand_from show" -l after -d 'Only events with seq greater than this' -r
complete -c certfab -n "__fish_certfab_using_subcommand log; and __fish_seen_subcommand_from show" -l kind -d 'Only events of this kind (e.g. revoked, login_failed)' -r
complete -c certfab -n "__fish_certfab_using_subcommand log; and __fish_seen_subcommand_from show" -l config -d 'Site config (certfab.yaml). Also CERTFAB_CONFIG' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand log; and __fish_seen_subcommand_from show" -l json -d 'Print a machine-readable JSON result on stdout; messages go to stderr'
complete -c certfab -n "__fish_certfab_using_subcommand log; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help'
complete -c certfab -n "__fish_certfab_using_subcommand log; and __fish_seen_subcommand_from help" -f -a "checkpoint" -d 'Sign the current head of the audit chain in the HSM (the manifest/audit signer)'
complete -c certfab -n "__fish_certfab_using_subcommand log; and __fish_seen_subcommand_from help" -f -a "verify" -d 'Check the audit chain from its first event and every checkpoint signature'
complete -c certfab -n "__fish_certfab_using_subcommand log; and __fish_seen_subcommand_from help" -f -a "show" -d 'Print audit events as JSON lines (a JSON array with --json)'
complete -c certfab -n "__fish_certfab_using_subcommand log; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c certfab -n "__fish_certfab_using_subcommand ledger; and not __fish_seen_subcommand_from import recover help" -l config -d 'Site config (certfab.yaml). Also CERTFAB_CONFIG' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand ledger; and not __fish_seen_subcommand_from import recover help" -l json -d 'Print a machine-readable JSON result on stdout; messages go to stderr'
complete -c certfab -n "__fish_certfab_using_subcommand ledger; and not __fish_seen_subcommand_from import recover help" -s h -l help -d 'Print help'
complete -c certfab -n "__fish_certfab_using_subcommand ledger; and not __fish_seen_subcommand_from import recover help" -f -a "import" -d 'Move a station\'s SQLite ledger into the central ledger of the site config: devices, certificates, rejections, manifests and its audit chain, in one transaction. Any conflict with the central ledger (device, key, serial, batch, CRL number) refuses the whole import, each conflict named (exit 3); a file imported before is a no-op'
complete -c certfab -n "__fish_certfab_using_subcommand ledger; and not __fish_seen_subcommand_from import recover help" -f -a "recover" -d 'Burn the intents of certfab processes that are gone (serial reserved, signature never recorded), so their devices are issued afresh; a live process\'s intents are left alone. Prints what was burned; one audit event records it'
complete -c certfab -n "__fish_certfab_using_subcommand ledger; and not __fish_seen_subcommand_from import recover help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c certfab -n "__fish_certfab_using_subcommand ledger; and __fish_seen_subcommand_from import" -l config -d 'Site config (certfab.yaml). Also CERTFAB_CONFIG' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand ledger; and __fish_seen_subcommand_from import" -l json -d 'Print a machine-readable JSON result on stdout; messages go to stderr'
complete -c certfab -n "__fish_certfab_using_subcommand ledger; and __fish_seen_subcommand_from import" -s h -l help -d 'Print help'
complete -c certfab -n "__fish_certfab_using_subcommand ledger; and __fish_seen_subcommand_from recover" -l config -d 'Site config (certfab.yaml). Also CERTFAB_CONFIG' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand ledger; and __fish_seen_subcommand_from recover" -l json -d 'Print a machine-readable JSON result on stdout; messages go to stderr'
complete -c certfab -n "__fish_certfab_using_subcommand ledger; and __fish_seen_subcommand_from recover" -s h -l help -d 'Print help'
complete -c certfab -n "__fish_certfab_using_subcommand ledger; and __fish_seen_subcommand_from help" -f -a "import" -d 'Move a station\'s SQLite ledger into the central ledger of the site config: devices, certificates, rejections, manifests and its audit chain, in one transaction. Any conflict with the central ledger (device, key, serial, batch, CRL number) refuses the whole import, each conflict named (exit 3); a file imported before is a no-op'
complete -c certfab -n "__fish_certfab_using_subcommand ledger; and __fish_seen_subcommand_from help" -f -a "recover" -d 'Burn the intents of certfab processes that are gone (serial reserved, signature never recorded), so their devices are issued afresh; a live process\'s intents are left alone. Prints what was burned; one audit event records it'
complete -c certfab -n "__fish_certfab_using_subcommand ledger; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c certfab -n "__fish_certfab_using_subcommand manifest; and not __fish_seen_subcommand_from build verify show merge help" -l config -d 'Site config (certfab.yaml). Also CERTFAB_CONFIG' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand manifest; and not __fish_seen_subcommand_from build verify show merge help" -l json -d 'Print a machine-readable JSON result on stdout; messages go to stderr'
complete -c certfab -n "__fish_certfab_using_subcommand manifest; and not __fish_seen_subcommand_from build verify show merge help" -s h -l help -d 'Print help'
complete -c certfab -n "__fish_certfab_using_subcommand manifest; and not __fish_seen_subcommand_from build verify show merge help" -f -a "build" -d 'Build the signed manifest of a batch or station shift from the ledger (M.jsonl and M.jsonl.jws); marks its devices exported and chains to the ledger\'s previous manifest'
complete -c certfab -n "__fish_certfab_using_subcommand manifest; and not __fish_seen_subcommand_from build verify show merge help" -f -a "verify" -d 'Verify manifests offline: signature and signer chain, Merkle root and count, every certificate against the declared CA; with several, also that each ledger\'s manifests chain without gaps, forks or repeated devices. Exit 0 only when everything checks out'
complete -c certfab -n "__fish_certfab_using_subcommand manifest; and not __fish_seen_subcommand_from build verify show merge help" -f -a "show" -d 'Summarise a manifest (verifying it when a trust anchor is available)'
complete -c certfab -n "__fish_certfab_using_subcommand manifest; and not __fish_seen_subcommand_from build verify show merge help" -f -a "merge" -d 'Merge verified manifests from several stations or shifts into one signed manifest, refusing duplicate device ids, serials or public keys and mixed profiles/tenants/CAs'
complete -c certfab -n "__fish_certfab_using_subcommand manifest; and not __fish_seen_subcommand_from build verify show merge help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c certfab -n "__fish_certfab_using_subcommand manifest; and __fish_seen_subcommand_from build" -l batch -d 'Batch or station-shift id (certfab batch status --json); repeat for several batches of the same profile and CA' -r
complete -c certfab -n "__fish_certfab_using_subcommand manifest; and __fish_seen_subcommand_from build" -l out -d 'The manifest file to write; the signature goes to FILE.jws' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand manifest; and __fish_seen_subcommand_from build" -l var -d 'NAME=VALUE for {var.NAME} in the profile\'s cloud: templates (repeatable)' -r
complete -c certfab -n "__fish_certfab_using_subcommand manifest; and __fish_seen_subcommand_from build" -l profile -d 'The profile file the batch was issued under (default: by name from profiles_dir)' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand manifest; and __fish_seen_subcommand_from build" -l trust -d 'Root(s) the result must verify under (default: the site config\'s roots)' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand manifest; and __fish_seen_subcommand_from build" -l config -d 'Site config (certfab.yaml). Also CERTFAB_CONFIG' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand manifest; and __fish_seen_subcommand_from build" -l json -d 'Print a machine-readable JSON result on stdout; messages go to stderr'
complete -c certfab -n "__fish_certfab_using_subcommand manifest; and __fish_seen_subcommand_from build" -s h -l help -d 'Print help'
complete -c certfab -n "__fish_certfab_using_subcommand manifest; and __fish_seen_subcommand_from verify" -l signature -d 'The detached signature (default: MANIFEST.jws); only with one manifest' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand manifest; and __fish_seen_subcommand_from verify" -l trust -d 'Root CA certificate(s) to trust, PEM (default: the site config\'s roots)' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand manifest; and __fish_seen_subcommand_from verify" -l config -d 'Site config (certfab.yaml). Also CERTFAB_CONFIG' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand manifest; and __fish_seen_subcommand_from verify" -l json -d 'Print a machine-readable JSON result on stdout; messages go to stderr'
complete -c certfab -n "__fish_certfab_using_subcommand manifest; and __fish_seen_subcommand_from verify" -s h -l help -d 'Print help'
complete -c certfab -n "__fish_certfab_using_subcommand manifest; and __fish_seen_subcommand_from show" -l trust -d 'Root CA certificate(s) to trust, PEM (default: the site config\'s roots)' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand manifest; and __fish_seen_subcommand_from show" -l config -d 'Site config (certfab.yaml). Also CERTFAB_CONFIG' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand manifest; and __fish_seen_subcommand_from show" -l devices -d 'List every device (id, serial, state)'
complete -c certfab -n "__fish_certfab_using_subcommand manifest; and __fish_seen_subcommand_from show" -l json -d 'Print a machine-readable JSON result on stdout; messages go to stderr'
complete -c certfab -n "__fish_certfab_using_subcommand manifest; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help'
complete -c certfab -n "__fish_certfab_using_subcommand manifest; and __fish_seen_subcommand_from merge" -l out -d 'The merged manifest to write (signature at FILE.jws)' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand manifest; and __fish_seen_subcommand_from merge" -l trust -d 'Root CA certificate(s) to trust (default: the site config\'s roots)' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand manifest; and __fish_seen_subcommand_from merge" -l config -d 'Site config (certfab.yaml). Also CERTFAB_CONFIG' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand manifest; and __fish_seen_subcommand_from merge" -l json -d 'Print a machine-readable JSON result on stdout; messages go to stderr'
complete -c certfab -n "__fish_certfab_using_subcommand manifest; and __fish_seen_subcommand_from merge" -s h -l help -d 'Print help'
complete -c certfab -n "__fish_certfab_using_subcommand manifest; and __fish_seen_subcommand_from help" -f -a "build" -d 'Build the signed manifest of a batch or station shift from the ledger (M.jsonl and M.jsonl.jws); marks its devices exported and chains to the ledger\'s previous manifest'
complete -c certfab -n "__fish_certfab_using_subcommand manifest; and __fish_seen_subcommand_from help" -f -a "verify" -d 'Verify manifests offline: signature and signer chain, Merkle root and count, every certificate against the declared CA; with several, also that each ledger\'s manifests chain without gaps, forks or repeated devices. Exit 0 only when everything checks out'
complete -c certfab -n "__fish_certfab_using_subcommand manifest; and __fish_seen_subcommand_from help" -f -a "show" -d 'Summarise a manifest (verifying it when a trust anchor is available)'
complete -c certfab -n "__fish_certfab_using_subcommand manifest; and __fish_seen_subcommand_from help" -f -a "merge" -d 'Merge verified manifests from several stations or shifts into one signed manifest, refusing duplicate device ids, serials or public keys and mixed profiles/tenants/CAs'
complete -c certfab -n "__fish_certfab_using_subcommand manifest; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c certfab -n "__fish_certfab_using_subcommand export" -l format -d 'Output format (docs/exports.md describes each and what consumes it)' -r -f -a "aws-bulk\t'AWS IoT bulk registration: NDJSON input file(s) + template + StartThingRegistrationTask'
aws-jitp\t'AWS IoT Just-in-Time Provisioning: template and CA registration bundle'
aws-jitr\t'AWS IoT Just-in-Time Registration: CA registration with auto-registration, rule, allow-list'
aws-multi-account\t'AWS IoT multi-account registration: RegisterCertificateWithoutCA requests'
aws-policy\t'AWS IoT least-privilege device policy (thing-name policy variables)'
aws-fleet-claim\t'AWS IoT Fleet Provisioning by claim: claim certificate, claim policy, template'
azure-dps\t'Azure IoT Hub DPS individual X.509 enrollments (bulk operation bodies, 10 per call)'
azure-dps-group\t'Azure IoT Hub DPS X.509 enrollment group for the issuing CA'
hono\t'Eclipse Hono: tenant with the trusted CA, device registrations and x509-cert credentials'
peridio\t'Peridio: CA certificate JITP settings and device records'
nrfcloud\t'nRF Cloud bulk onboarding CSV (1000 rows a file)'
microchip-jws\t'Microchip-style secure element manifest: a JSON array of per-device JWS, signed by the manifest signer in the HSM'
csv\t'Plain CSV for spreadsheets (formula cells neutralized)'"
complete -c certfab -n "__fish_certfab_using_subcommand export" -l manifest -d 'The manifest (its signature is read from MANIFEST.jws); verified before anything else' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand export" -l trust -d 'Root certificate(s) to verify the manifest against (default: the site config\'s roots)' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand export" -l out -d 'Output directory (created); existing files in it are refused unless --force' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand export" -l max-rows -d 'At most N devices per row file; more are split into -0001, -0002, … files' -r
complete -c certfab -n "__fish_certfab_using_subcommand export" -l set -d 'A platform setting, overriding the profile\'s cloud: section (e.g. aws.region=eu-west-1)' -r
complete -c certfab -n "__fish_certfab_using_subcommand export" -l verification-cert -d 'Verification certificate from `certfab ca verification-cert` (CA registration)' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand export" -l claim-profile -d 'aws-fleet-claim: the claim certificate\'s profile (path or name)' -r
complete -c certfab -n "__fish_certfab_using_subcommand export" -l claim-id -d 'aws-fleet-claim: the claim\'s device id in the ledger (default fleet-claim-<batch>)' -r
complete -c certfab -n "__fish_certfab_using_subcommand export" -l key-passphrase -d 'aws-fleet-claim: passphrase source for the claim key: env:NAME or file:PATH' -r
complete -c certfab -n "__fish_certfab_using_subcommand export" -l kdf-iterations -d 'PBKDF2-SHA256 iterations for the encrypted claim key' -r
complete -c certfab -n "__fish_certfab_using_subcommand export" -l config -d 'Site config (certfab.yaml). Also CERTFAB_CONFIG' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand export" -l force -d 'Replace files that already exist in --out'
complete -c certfab -n "__fish_certfab_using_subcommand export" -l plain-keys -d 'aws-fleet-claim: write the claim key unencrypted (explicit; else --key-passphrase)'
complete -c certfab -n "__fish_certfab_using_subcommand export" -l json -d 'Print a machine-readable JSON result on stdout; messages go to stderr'
complete -c certfab -n "__fish_certfab_using_subcommand export" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c certfab -n "__fish_certfab_using_subcommand audit" -l ledger -d 'A ledger to audit (repeatable); opened read-only. Default with --config: the site\'s' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand audit" -l manifest -d 'A signed manifest to check against the ledgers (repeatable); its signature is read from MANIFEST.jws and verified against the self-signed roots among the CAs' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand audit" -l ca -d 'A CA certificate file (PEM with one or more certificates, or DER; repeatable). Default with --config: every CA in the site config and its chain' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand audit" -l certs -d 'A directory searched recursively for device certificate files that every one must be in a ledger (e.g. a batch --out; repeatable)' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand audit" -l profiles -d 'Profiles (*.yaml) to compare certificates with. Default with --config: profiles_dir' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand audit" -l expiring-days -d 'Report certificates (and CAs) expiring within this many days' -r
complete -c certfab -n "__fish_certfab_using_subcommand audit" -l fail-on -d 'Exit 3 when any finding is at or above this severity' -r -f -a "info\t''
low\t''
medium\t''
high\t''
critical\t''"
complete -c certfab -n "__fish_certfab_using_subcommand audit" -l checkpoint -d 'A checkpoint exported earlier (`certfab log checkpoint --out`; repeatable): checked against the ledger it names, which also catches checkpoints removed from it' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand audit" -l signer-cert -d 'The audit signer certificate checkpoints must be signed by. Default with --config: the site\'s signer.cert; otherwise any signer under a given root' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand audit" -l html -d 'Also write the report as one self-contained HTML file (must not exist)' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand audit" -l spy-log -d 'A call log of OpenSC\'s pkcs11-spy captured in front of the token: every signature in it must be accounted for by the ledger\'s token_signatures events (docs/audit.md)' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand audit" -l config -d 'Site config (certfab.yaml). Also CERTFAB_CONFIG' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand audit" -l json -d 'Print a machine-readable JSON result on stdout; messages go to stderr'
complete -c certfab -n "__fish_certfab_using_subcommand audit" -s h -l help -d 'Print help'
complete -c certfab -n "__fish_certfab_using_subcommand profile; and not __fish_seen_subcommand_from show help" -l config -d 'Site config (certfab.yaml). Also CERTFAB_CONFIG' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand profile; and not __fish_seen_subcommand_from show help" -l json -d 'Print a machine-readable JSON result on stdout; messages go to stderr'
complete -c certfab -n "__fish_certfab_using_subcommand profile; and not __fish_seen_subcommand_from show help" -s h -l help -d 'Print help'
complete -c certfab -n "__fish_certfab_using_subcommand profile; and not __fish_seen_subcommand_from show help" -f -a "show" -d 'The profile as certfab resolves it, every default written out (YAML that loads as the same profile; --json for machines), and with --config the CA that signs for it now. Needs no token'
complete -c certfab -n "__fish_certfab_using_subcommand profile; and not __fish_seen_subcommand_from show help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c certfab -n "__fish_certfab_using_subcommand profile; and __fish_seen_subcommand_from show" -l config -d 'Site config (certfab.yaml). Also CERTFAB_CONFIG' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand profile; and __fish_seen_subcommand_from show" -l json -d 'Print a machine-readable JSON result on stdout; messages go to stderr'
complete -c certfab -n "__fish_certfab_using_subcommand profile; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help'
complete -c certfab -n "__fish_certfab_using_subcommand profile; and __fish_seen_subcommand_from help" -f -a "show" -d 'The profile as certfab resolves it, every default written out (YAML that loads as the same profile; --json for machines), and with --config the CA that signs for it now. Needs no token'
complete -c certfab -n "__fish_certfab_using_subcommand profile; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c certfab -n "__fish_certfab_using_subcommand completions" -l config -d 'Site config (certfab.yaml). Also CERTFAB_CONFIG' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand completions" -l json -d 'Print a machine-readable JSON result on stdout; messages go to stderr'
complete -c certfab -n "__fish_certfab_using_subcommand completions" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c certfab -n "__fish_certfab_using_subcommand man" -l out -d 'Directory for the pages (certfab.1, certfab-issue.1, …); created if missing. Pages of commands that no longer exist are removed from it' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand man" -l config -d 'Site config (certfab.yaml). Also CERTFAB_CONFIG' -r -F
complete -c certfab -n "__fish_certfab_using_subcommand man" -l json -d 'Print a machine-readable JSON result on stdout; messages go to stderr'
complete -c certfab -n "__fish_certfab_using_subcommand man" -s h -l help -d 'Print help'
complete -c certfab -n "__fish_certfab_using_subcommand help; and not __fish_seen_subcommand_from hsm ca issue batch station revoke crl renew log ledger manifest export audit profile completions man help" -f -a "hsm" -d 'Inspect and measure the PKCS#11 token'
complete -c certfab -n "__fish_certfab_using_subcommand help; and not __fish_seen_subcommand_from hsm ca issue batch station revoke crl renew log ledger manifest export audit profile completions man help" -f -a "ca" -d 'CA key ceremony: generate keys in the token, self-sign, CSR, sign, import'
complete -c certfab -n "__fish_certfab_using_subcommand help; and not __fish_seen_subcommand_from hsm ca issue batch station revoke crl renew log ledger manifest export audit profile completions man help" -f -a "issue" -d 'Issue one device certificate'
complete -c certfab -n "__fish_certfab_using_subcommand help; and not __fish_seen_subcommand_from hsm ca issue batch station revoke crl renew log ledger manifest export audit profile completions man help" -f -a "batch" -d 'Issue for many devices with a crash-safe ledger; `batch status`, `batch resume`'
complete -c certfab -n "__fish_certfab_using_subcommand help; and not __fish_seen_subcommand_from hsm ca issue batch station revoke crl renew log ledger manifest export audit profile completions man help" -f -a "station" -d 'Run a station: identify, sign, install, prove and lock devices one after another'
complete -c certfab -n "__fish_certfab_using_subcommand help; and not __fish_seen_subcommand_from hsm ca issue batch station revoke crl renew log ledger manifest export audit profile completions man help" -f -a "revoke" -d 'Revoke a device\'s certificate (or one by serial); `revoke list` for cloud exports'
complete -c certfab -n "__fish_certfab_using_subcommand help; and not __fish_seen_subcommand_from hsm ca issue batch station revoke crl renew log ledger manifest export audit profile completions man help" -f -a "crl" -d 'Make a CRL signed by a CA key in the HSM'
complete -c certfab -n "__fish_certfab_using_subcommand help; and not __fish_seen_subcommand_from hsm ca issue batch station revoke crl renew log ledger manifest export audit profile completions man help" -f -a "renew" -d 'Rotate a device\'s key in the field: a new certificate that supersedes the old'
complete -c certfab -n "__fish_certfab_using_subcommand help; and not __fish_seen_subcommand_from hsm ca issue batch station revoke crl renew log ledger manifest export audit profile completions man help" -f -a "log" -d 'The tamper-evident audit log: signed checkpoints, verification, events'
complete -c certfab -n "__fish_certfab_using_subcommand help; and not __fish_seen_subcommand_from hsm ca issue batch station revoke crl renew log ledger manifest export audit profile completions man help" -f -a "ledger" -d 'The ledger itself: import a station\'s SQLite ledger into the central one; burn a dead process\'s intents'
complete -c certfab -n "__fish_certfab_using_subcommand help; and not __fish_seen_subcommand_from hsm ca issue batch station revoke crl renew log ledger manifest export audit profile completions man help" -f -a "manifest" -d 'Signed manifests of batches and shifts: build, verify, show, merge'
complete -c certfab -n "__fish_certfab_using_subcommand help; and not __fish_seen_subcommand_from hsm ca issue batch station revoke crl renew log ledger manifest export audit profile completions man help" -f -a "export" -d 'Cloud pre-registration files from a verified manifest (docs/exports.md)'
complete -c certfab -n "__fish_certfab_using_subcommand help; and not __fish_seen_subcommand_from hsm ca issue batch station revoke crl renew log ledger manifest export audit profile completions man help" -f -a "audit" -d 'Cross-check ledgers, manifests, certificate files and CA certificates; report findings (text, --json, --html) and exit 3 when one is at or above --fail-on'
complete -c certfab -n "__fish_certfab_using_subcommand help; and not __fish_seen_subcommand_from hsm ca issue batch station revoke crl renew log ledger manifest export audit profile completions man help" -f -a "profile" -d 'Device-class profiles: `profile show P` prints one resolved, every default visible'
complete -c certfab -n "__fish_certfab_using_subcommand help; and not __fish_seen_subcommand_from hsm ca issue batch station revoke crl renew log ledger manifest export audit profile completions man help" -f -a "completions" -d 'Print a shell completion script (bash, zsh or fish) on stdout'
complete -c certfab -n "__fish_certfab_using_subcommand help; and not __fish_seen_subcommand_from hsm ca issue batch station revoke crl renew log ledger manifest export audit profile completions man help" -f -a "man" -d 'Write the man pages (one per command) into a directory; for packaging and docs/man'
complete -c certfab -n "__fish_certfab_using_subcommand help; and not __fish_seen_subcommand_from hsm ca issue batch station revoke crl renew log ledger manifest export audit profile completions man help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c certfab -n "__fish_certfab_using_subcommand help; and __fish_seen_subcommand_from hsm" -f -a "init-token" -d 'Initialise a new token in a free slot (development/test lines). PINs come from env:NAME or file:PATH sources, never from the command line'
complete -c certfab -n "__fish_certfab_using_subcommand help; and __fish_seen_subcommand_from hsm" -f -a "info" -d 'List slots, tokens, mechanisms and key objects (public attributes only; never the PIN)'
complete -c certfab -n "__fish_certfab_using_subcommand help; and __fish_seen_subcommand_from hsm" -f -a "bench" -d 'Measure the token\'s raw signing rate with 1..N sessions'
complete -c certfab -n "__fish_certfab_using_subcommand help; and __fish_seen_subcommand_from ca" -f -a "keygen" -d 'Generate a CA key pair inside the token (non-extractable, sensitive, sign-only)'
complete -c certfab -n "__fish_certfab_using_subcommand help; and __fish_seen_subcommand_from ca" -f -a "selfsign" -d 'Self-sign a root CA certificate with a key in the token'
complete -c certfab -n "__fish_certfab_using_subcommand help; and __fish_seen_subcommand_from ca" -f -a "csr" -d 'Make a CSR for a CA whose key is in the token (for signing by a root here or offline)'
complete -c certfab -n "__fish_certfab_using_subcommand help; and __fish_seen_subcommand_from ca" -f -a "sign" -d 'Sign a subordinate CA certificate (or, with --end-entity, a manifest/audit signer\'s certificate) with a CA key in the token'
complete -c certfab -n "__fish_certfab_using_subcommand help; and __fish_seen_subcommand_from ca" -f -a "verification-cert" -d 'Sign a proof-of-possession certificate (CN = a cloud\'s registration/verification code) with a CA\'s key in the token, for AWS IoT RegisterCACertificate or Azure DPS verify'
complete -c certfab -n "__fish_certfab_using_subcommand help; and __fish_seen_subcommand_from ca" -f -a "import" -d 'Store a CA certificate on the token beside its key, after checking they match'
complete -c certfab -n "__fish_certfab_using_subcommand help; and __fish_seen_subcommand_from ca" -f -a "status" -d 'Every configured CA: expiry, dependants in the ledger, rollover, warnings (no token needed)'
complete -c certfab -n "__fish_certfab_using_subcommand help; and __fish_seen_subcommand_from ca" -f -a "bundle" -d 'Write the trust bundle for a profile: its issuer\'s chain and, during a rollover, the next issuer\'s (no token needed)'
complete -c certfab -n "__fish_certfab_using_subcommand help; and __fish_seen_subcommand_from batch" -f -a "status" -d 'Counts by state and the rejected rows of a batch (default: the latest)'
complete -c certfab -n "__fish_certfab_using_subcommand help; and __fish_seen_subcommand_from batch" -f -a "close" -d 'Close a batch that will not be resumed (its input is gone or was wrong): it is marked finished and the reason is recorded in the audit log. What it issued stays issued'
complete -c certfab -n "__fish_certfab_using_subcommand help; and __fish_seen_subcommand_from batch" -f -a "resume" -d 'Continue a batch from the ledger (same input, profile and output as it started with)'
complete -c certfab -n "__fish_certfab_using_subcommand help; and __fish_seen_subcommand_from revoke" -f -a "list" -d 'List revoked certificates, or the cloud operations that revoke them'
complete -c certfab -n "__fish_certfab_using_subcommand help; and __fish_seen_subcommand_from log" -f -a "checkpoint" -d 'Sign the current head of the audit chain in the HSM (the manifest/audit signer)'
complete -c certfab -n "__fish_certfab_using_subcommand help; and __fish_seen_subcommand_from log" -f -a "verify" -d 'Check the audit chain from its first event and every checkpoint signature'
complete -c certfab -n "__fish_certfab_using_subcommand help; and __fish_seen_subcommand_from log" -f -a "show" -d 'Print audit events as JSON lines (a JSON array with --json)'
complete -c certfab -n "__fish_certfab_using_subcommand help; and __fish_seen_subcommand_from ledger" -f -a "import" -d 'Move a station\'s SQLite ledger into the central ledger of the site config: devices, certificates, rejections, manifests and its audit chain, in one transaction. Any conflict with the central ledger (device, key, serial, batch, CRL number) refuses the whole import, each conflict named (exit 3); a file imported before is a no-op'
complete -c certfab -n "__fish_certfab_using_subcommand help; and __fish_seen_subcommand_from ledger" -f -a "recover" -d 'Burn the intents of certfab processes that are gone (serial reserved, signature never recorded), so their devices are issued afresh; a live process\'s intents are left alone. Prints what was burned; one audit event records it'
complete -c certfab -n "__fish_certfab_using_subcommand help; and __fish_seen_subcommand_from manifest" -f -a "build" -d 'Build the signed manifest of a batch or station shift from the ledger (M.jsonl and M.jsonl.jws); marks its devices exported and chains to the ledger\'s previous manifest'
complete -c certfab -n "__fish_certfab_using_subcommand help; and __fish_seen_subcommand_from manifest" -f -a "verify" -d 'Verify manifests offline: signature and signer chain, Merkle root and count, every certificate against the declared CA; with several, also that each ledger\'s manifests chain without gaps, forks or repeated devices. Exit 0 only when everything checks out'
complete -c certfab -n "__fish_certfab_using_subcommand help; and __fish_seen_subcommand_from manifest" -f -a "show" -d 'Summarise a manifest (verifying it when a trust anchor is available)'
complete -c certfab -n "__fish_certfab_using_subcommand help; and __fish_seen_subcommand_from manifest" -f -a "merge" -d 'Merge verified manifests from several stations or shifts into one signed manifest, refusing duplicate device ids, serials or public keys and mixed profiles/tenants/CAs'
complete -c certfab -n "__fish_certfab_using_subcommand help; and __fish_seen_subcommand_from profile" -f -a "show" -d 'The profile as certfab resolves it, every default written out (YAML that loads as the same profile; --json for machines), and with --config the CA that signs for it now. Needs no token'
