// TLS settings of a client: the CA that signed the server's certificate and, for mutual
// TLS, the client's own certificate and key. A server started with `--tls-cert-file` and
// `--tls-key-file` speaks only TLS; with `--tls-client-ca-file` as well it also requires a
// client certificate signed by that CA.

import { readFileSync } from "node:fs";
import type { SecureClientSessionOptions } from "node:http2";

/** PEM text (a string or the bytes of a file). */
export type Pem = string | Uint8Array;

export interface TlsOptions {
  /** CA certificate(s) to trust for the server's certificate (PEM). Unset: Node's default roots. */
  ca?: Pem;
  /** The same, read from a PEM file when the client is created. */
  caFile?: string;
  /** The client certificate chain, for mutual TLS (PEM). */
  cert?: Pem;
  /** The same, read from a PEM file. */
  certFile?: string;
  /** The client certificate's private key, for mutual TLS (PEM). */
  key?: Pem;
  /** The same, read from a PEM file. */
  keyFile?: string;
  /**
   * The name to verify in the server's certificate instead of the URL's host (e.g. when
   * connecting through an IP address or a tunnel).
   */
  serverName?: string;
}

function pem(data: Pem | undefined, file: string | undefined, what: string): Buffer | undefined {
  if (data !== undefined && file !== undefined) {
    throw new TypeError(`tls: give ${what} or ${what}File, not both`);
  }
  if (file !== undefined) {
    return readFileSync(file);
  }
  return data === undefined ? undefined : Buffer.from(data);
}

/** Node's HTTP/2 TLS options for `tls` (files are read now). */
export function secureSessionOptions(tls: TlsOptions): SecureClientSessionOptions {
  const ca = pem(tls.ca, tls.caFile, "ca");
  const cert = pem(tls.cert, tls.certFile, "cert");
  const key = pem(tls.key, tls.keyFile, "key");
  if ((cert === undefined) !== (key === undefined)) {
    throw new TypeError("tls: a client certificate needs its key, and a key its certificate");
  }
  const options: SecureClientSessionOptions = {};
  if (ca !== undefined) options.ca = ca;
  if (cert !== undefined) options.cert = cert;
  if (key !== undefined) options.key = key;
  if (tls.serverName !== undefined) options.servername = tls.serverName;
  return options;
}
