"""The commands that only touch this machine: instances, certificates, configuration.

Options, order of work and messages follow the real `Commands/*Command.cs`.
"""

from __future__ import annotations

import os
import sys

from . import crypto, instances, paths
from .command import FORMAT_OPTION, Command, Invocation, output_format
from .dotnet import parse_bool, parse_int, parse_ip
from .failures import ControlledFailure
from .jsontext import dumps
from .options import Option
from .settings import (
    APPLICATION_DIRECTORY,
    HOME,
    LISTEN_IP,
    LISTENING,
    NO_LISTEN,
    PORT,
    TRUSTED_SERVERS,
)

TYPE_CHECKING = False  # typing's import alone is a tenth of a short command's CPU
if TYPE_CHECKING:
    from typing import TypeGuard

    from .pfx import Identity

RECOMMENDED_KEY_BITS = 2048


def _given(value: str | None) -> TypeGuard[str]:
    return bool(value and value.strip())


def _create_instance(inv: Invocation) -> None:
    p = inv.parsed
    instances.create(p.value("instance"), p.value("config"), p.value("home"), inv.log)


def _delete_instance(inv: Invocation) -> None:
    if inv.current.name is not None:
        instances.delete(inv.current.name, inv.log)


def _list_instances(inv: Invocation) -> None:
    found = instances.list_instances()
    if output_format(inv) == "json":
        rows = [{"InstanceName": i.name, "ConfigurationFilePath": i.config_path} for i in found]
        sys.stdout.write(dumps(rows, indent=2))
    elif found:
        for i in found:
            sys.stdout.write(f"Instance '{i.name}' uses configuration '{i.config_path}'.\n")
    else:
        sys.stdout.write("No instances installed")


def _new_certificate(inv: Invocation) -> None:
    p, log = inv.parsed, inv.log
    if_blank, export_file, export_pfx = (
        p.flag("if-blank"),
        p.value("export-file"),
        p.value("export-pfx"),
    )
    if if_blank and _given(export_file):
        raise ControlledFailure(
            "Invalid command: --if-blank and --export-file cannot be specified together"
        )
    if if_blank and _given(export_pfx):
        raise ControlledFailure(
            "Invalid command: --if-blank and --export-pfx cannot be specified together"
        )
    if _given(export_file) and _given(export_pfx):
        raise ControlledFailure(
            "Invalid command: --export-file and --export-pfx cannot be specified together"
        )
    if _given(export_file):
        import base64

        key, cert = crypto.new_self_signed()
        exported = base64.b64encode(crypto.to_pfx(key, cert, None)).decode()
        with open(export_file, "w", encoding="utf-8") as file:
            file.write(exported)
        log.info(f"A new certificate has been generated and written to {export_file}. Thumbprint:")
        log.info(crypto.thumbprint(cert))
    elif _given(export_pfx):
        key, cert = crypto.new_self_signed()
        with open(export_pfx, "wb") as file:
            file.write(crypto.to_pfx(key, cert, p.value("pfx-password") or None))
        log.info(f"A new certificate has been generated and written to {export_pfx}. Thumbprint:")
        log.info(crypto.thumbprint(cert))
    else:
        settings = inv.current.settings()
        if if_blank and settings.thumbprint:
            log.info("A certificate already exists, no changes will be applied.")
            return
        key, cert = crypto.new_self_signed()
        settings.set_certificate(key, cert)
        inv.vote_for_restart()
        log.info("A new certificate has been generated and installed. Thumbprint:")
        log.info(crypto.thumbprint(cert))


def _import_certificate(inv: Invocation) -> None:
    p, log = inv.parsed, inv.log
    from_registry, from_file, from_base64 = (
        p.flag("from-registry"),
        p.value("from-file"),
        p.value("from-base64"),
    )
    sources = [from_registry, _given(from_file), _given(from_base64)]
    if not any(sources):
        raise ControlledFailure("Please specify the certificate to import.")
    if sum(sources) > 1:
        raise ControlledFailure(
            "Please specify only one of either from-registry or from-file or from-base64"
        )
    if from_registry:
        log.info("Importing the Octopus 1.x certificate stored in the Windows registry...")
        # The real command reaches for the Windows registry, which .NET refuses on Linux.
        raise NotImplementedError("Registry is not supported on this platform.")
    if _given(from_file):
        identity = _from_file(paths.pure(from_file), p.value("pfx-password"), inv)
    else:
        import base64

        log.info("Importing the certificate via base64...")
        identity = crypto.open_pfx(base64.b64decode("".join(str(from_base64).split())), None)
    inv.current.settings().set_identity(identity)
    inv.vote_for_restart()
    if identity.key_bits < RECOMMENDED_KEY_BITS:
        log.warn(
            "The imported certificate's private key is smaller than the currently-recommended "
            "bit length; generating a new key for the tentacle is advised."
        )
    log.info(f"Certificate with thumbprint {identity.thumbprint} imported successfully.")


def _from_file(path: str, password: str | None, inv: Invocation) -> Identity:
    if not os.path.isfile(path):
        raise ControlledFailure(f"Certificate '{path}' was not found.")
    if paths.suffix(path).lower() != ".pfx":
        # Not called .pfx: first read as new-certificate -e's base64 text, then as a PFX.
        import base64
        import binascii

        inv.log.info(f"Importing the certificate stored in {path}...")
        with open(path, encoding="utf-8-sig", errors="replace") as file:
            text = "".join(file.read().split())
        try:
            return crypto.open_pfx(base64.b64decode(text, validate=True), None)
        except binascii.Error:
            pass
    with_password = " using the provided password" if password else ""
    inv.log.info(f"Importing the certificate stored in PFX file in {path}{with_password}...")
    with open(path, "rb") as file:
        data = file.read()
    try:
        return crypto.open_pfx(data, password or None)
    except crypto.CertificateError:
        # The real Tentacle lets .NET's CryptographicException escape here (exit 100); the
        # stand-in reports a wrong password as a controlled failure (exit 1) on purpose.
        raise ControlledFailure(
            f"The certificate in {path} could not be read with the provided password, the "
            "password may be incorrect, or the file holds no private key."
        ) from None


def _show_thumbprint(inv: Invocation) -> None:
    chosen = output_format(inv)
    found = inv.current.settings().thumbprint
    content = dumps({"Thumbprint": found}, separators=(",", ":")) if chosen == "json" else found
    export = inv.parsed.value("export-file")
    if _given(export):
        with open(export, "w", encoding="ascii") as file:
            file.write(content or "")
        inv.log.info(f"The thumbprint has been written to {export}.")
    else:
        sys.stdout.write(content or "")


def _show_configuration(inv: Invocation) -> None:
    """The instance's settings as JSON, nested by the dots of their keys, like the real
    ShowConfigurationCommand [derived]; the certificate itself is never shown."""
    settings = inv.current.settings()
    values = {
        HOME: settings.home_dir,
        "Tentacle.CertificateThumbprint": settings.thumbprint,
        TRUSTED_SERVERS: settings.trusted_servers,
        APPLICATION_DIRECTORY: settings.get(APPLICATION_DIRECTORY),
        LISTEN_IP: settings.listen_ip,
        NO_LISTEN: settings.no_listen,
        PORT: settings.port,
    }
    nested: dict = {}
    for key, value in values.items():
        *parents, leaf = key.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    text = dumps(nested, indent=2)
    target = inv.parsed.value("file")
    if _given(target):
        with open(target, "w", encoding="utf-8") as file:
            file.write(text)
    else:
        sys.stdout.write(text)


def _configure(inv: Invocation) -> None:
    p, log, settings = inv.parsed, inv.log, inv.current.settings()
    to_add, to_remove = p.values("trust"), p.values("remove-trust")
    if p.flag("reset-trust"):
        log.info("Removing all trusted Octopus Servers...")
        settings.set_trusted_servers([])
        inv.vote_for_restart()
    if to_remove:
        log.info(f"Removing {len(to_remove)} trusted Octopus Servers")
        for thumb in to_remove:
            settings.remove_trust(thumb)
        inv.vote_for_restart()
    if to_add:
        log.info(f"Adding {len(to_add)} trusted Octopus Servers")
        for thumb in to_add:
            settings.add_or_update_trust(thumb, LISTENING)
        inv.vote_for_restart()
    # The other settings are applied afterwards, in the order they were given.
    for option, value in p.pairs:
        name, value = option.names[0].lower(), value or ""
        if name == "home":
            full = paths.absolute(value)
            os.makedirs(full, exist_ok=True)
            settings.set(HOME, full)
            log.info(f"Home directory set to: {full}")
        elif name == "app":
            full = paths.absolute(value)
            os.makedirs(full, exist_ok=True)
            settings.set(APPLICATION_DIRECTORY, full)
            log.info(f"Application directory set to: {full}")
        elif name == "port":
            settings.set(PORT, str(parse_int(value)))
            log.info(f"Services listen port: {value}")
        elif name == "nolisten":
            no_listen = parse_bool(value)
            settings.set(NO_LISTEN, str(no_listen).lower())
            # The real command also flips the style of the servers trusted in this call, but on
            # a freshly read copy that it never saves: it has no effect, so none here either.
            log.info(
                "Tentacle will not listen on a port"
                if no_listen
                else "Tentacle will listen on a TCP port"
            )
        elif name == "listenipaddress":
            if value.lower() == "any":
                settings.set(LISTEN_IP, None)
                log.info("Listen on any IP address")
            else:
                parsed = parse_ip(value)
                settings.set(LISTEN_IP, value)
                log.info(f"Listen on IP address: {parsed}")
        else:
            continue
        inv.vote_for_restart()


COMMANDS = (
    Command(
        "create-instance",
        "Registers a new instance of the Tentacle service",
        _create_instance,
        (
            Option("instance=", "Name of the instance to create"),
            Option("config=", "Path to configuration file to create"),
            Option(
                "home=",
                "[Optional] Path to the home directory - defaults to the same directory as the "
                "config file",
            ),
        ),
        standard=False,
    ),
    Command("delete-instance", "Deletes an instance of the Tentacle service", _delete_instance),
    Command(
        "list-instances",
        "Lists all installed Tentacle instances",
        _list_instances,
        (FORMAT_OPTION,),
        standard=False,
        quiet=True,
    ),
    Command(
        "new-certificate",
        "Creates and installs a new certificate for this Tentacle",
        _new_certificate,
        (
            Option("b|if-blank", "Generates a new certificate only if there is none"),
            Option(
                "e|export-file=",
                "DEPRECATED: Exports a new certificate to the specified file as unprotected "
                "base64 text, but does not save it to the Tentacle configuration; for use with "
                "the import-certificate command",
            ),
            Option(
                "export-pfx=",
                "Exports the new certificate to the specified file as a password protected pfx, "
                "but does not save it to the Tentacle configuration; for use with the "
                "import-certificate command",
            ),
            Option("pfx-password=", "The password to use for the exported pfx file"),
        ),
    ),
    Command(
        "import-certificate",
        "Replace the certificate that Tentacle uses to authenticate itself",
        _import_certificate,
        (
            Option(
                "r|from-registry",
                "Import the Octopus Tentacle 1.x certificate from the Windows registry",
            ),
            Option(
                "f|from-file=",
                "Import a certificate from the specified file generated by the new-certificate "
                "command or a Personal Information Exchange (PFX) file",
            ),
            Option("b|from-base64=", "Import a certificate from a base64 formatted string"),
            Option("pw|pfx-password=", "Personal Information Exchange (PFX) private key password"),
        ),
    ),
    Command(
        "show-thumbprint",
        "Show the thumbprint of this Tentacle's certificate",
        _show_thumbprint,
        (
            Option("e|export-file=", "Exports the Tentacle thumbprint to a file"),
            Option(
                "thumbprint-only",
                "DEPRECATED: Only print out the thumbprint, with no additional text. This switch "
                "has been deprecated and will be removed in Octopus 4.0 since it is no longer "
                "needed.",
            ),
            FORMAT_OPTION,
        ),
        quiet=True,
    ),
    Command(
        "show-configuration",
        "Outputs the Tentacle configuration",
        _show_configuration,
        (Option("file=", "Exports the server configuration to a file"),),
        quiet=True,
    ),
    Command(
        "configure",
        "Sets Tentacle settings such as the port number and thumbprints",
        _configure,
        (
            Option("home=|homedir=", "Home directory"),
            Option("app=|appdir=", "Default directory to deploy applications to"),
            Option("port=", "TCP port on which Tentacle should listen to connections"),
            Option(
                "noListen=",
                "Suppress listening on a TCP port (intended for polling Tentacles only)",
            ),
            Option("listenIpAddress=", "IP address on which Tentacle should listen. Default: any"),
            Option("trust=", "The thumbprint of the Octopus Server to trust"),
            Option(
                "remove-trust=",
                "The thumbprint of the Octopus Server to remove from the trusted list",
            ),
            Option("reset-trust", "Removes all trusted Octopus Servers"),
        ),
    ),
)
