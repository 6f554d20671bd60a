/**
 * kiln.yaml, declared once: this JSON Schema drives validation, the defaults, and `kiln schema`
 * (for editors, e.g. the YAML language server's `# yaml-language-server: $schema=` comment).
 */
import { MAX_AGE_PATTERN } from '../source/inrelease.js';

import { FORMATS, type FormatName } from '../formats/registry.js';
import type { HealthConfig } from '../apply/health.js';

export { FORMATS, type FormatName } from '../formats/registry.js';

const str = (description: string, extra: Record<string, unknown> = {}) => ({ type: 'string', description, ...extra });
const strList = (description: string) => ({ type: 'array', items: { type: 'string' }, description });

/*
 * Values that reach host tools and the image's apt configuration are held to what they can mean:
 * a mirror is an http(s) URL of host, port and path (no credentials: the URL is written into the
 * image and the release record; no quotes, spaces or shell characters), a package or component is
 * a Debian name. load.ts parses the URLs with `new URL` as well (a port past 65535, an IPv6 typo).
 */
const MIRROR_URL = '^https?://([A-Za-z0-9][A-Za-z0-9.-]*|\\[[0-9A-Fa-f:.]+\\])(:[0-9]{1,5})?(/[A-Za-z0-9._~%+/-]*)?$';
/** Debian policy 5.6.1 (lower case, digits, + - .; two characters at least), optionally =version (apt's syntax). */
const PACKAGE = '^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+)?$';
const COMPONENT = '^[a-z0-9][a-z0-9.+-]*$';
/** RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens. */
const HOSTNAME = '^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$';
const names = (description: string, pattern: string) => ({ type: 'array', items: { type: 'string', pattern }, description });

export const kilnSchema = {
  $schema: 'http://json-schema.org/draft-07/schema#',
  $id: 'https://kiln.invalid/schema/kiln.yaml.json',
  title: 'kiln.yaml',
  description: 'What Kiln builds: a trusted source, an Ansible playbook, the seal, the disk and its formats.',
  type: 'object',
  additionalProperties: false,
  required: ['name', 'source', 'provision'],
  properties: {
    name: str('Image name; releases are name@version.', { pattern: '^[a-z0-9][a-z0-9._-]{0,62}$' }),
    description: str('One line describing the image.'),
    version: {
      type: 'object', additionalProperties: false, default: {}, description: 'How the version is taken from git.',
      properties: {
        tag_pattern: str('Glob of release tags at HEAD (git tag --list syntax).', { default: 'release-*' }),
      },
    },
    source: {
      type: 'object', additionalProperties: false, description: 'The trusted upstream: the Debian archive (source.debian), a vendor\'s disk image (source.image), or an earlier Kiln release (source.release).',
      properties: {
        release: {
          type: 'object', additionalProperties: false, required: ['ref'],
          description: 'An earlier Kiln release as the parent of this image (a hardened base for application images). It is resolved with release.trust: a revoked parent, one with a revoked ancestor, or an unsigned one when signatures are required is refused; its disk is used only when it matches the release record. source.debian then names only the archive the Ansible tools tree comes from.',
          properties: {
            ref: str('The parent: name@version, name@channel (recorded, so a moved channel marks this image out of date) or name@sha256:<digest>.', { pattern: '^[a-z0-9][a-z0-9._-]{0,62}@[A-Za-z0-9._:+-]+$' }),
            store: str('The store holding the parent (a directory); default release.store.'),
            format: { enum: ['raw', 'qcow2', 'vmdk', 'vhd', 'vhdx'], description: "Which of the parent's artifacts to read; default raw, else the first of qcow2, vmdk, vhd, vhdx it has." },
          },
        },
        image: {
          type: 'object', additionalProperties: false, required: ['url'],
          description: "A vendor's disk image as the base instead of the archive: raw, qcow2, VMDK, VHD, VHDX, or a tar archive holding one (.tar.xz, .tar.gz). It must verify by a pinned digest (sha256/sha512 here or in kiln.lock) or by a checksum file signed by a key in keys; every configured check must pass. source.debian then names only the archive the Ansible tools tree comes from.",
          properties: {
            url: str('https://, http:// or file:// URL of the image, or an AMI: ec2://<region>/<ami-id>, or ec2://<region>/<name pattern> for the owner\'s newest image of that name (with owner).', { pattern: '^((https?|file)://[^\\s\'"`$]+|ec2://[a-z]{2}(-[a-z]+)+-[0-9]+/[^\\s\'"`$/]+)$' }),
            owner: str('For an ec2:// image: the AWS account that must own the AMI (e.g. a distribution\'s publishing account). An AMI of any other account is refused.', { pattern: '^[0-9]{12}$' }),
            sha256: str('The image file\'s sha256, pinned.', { pattern: '^[0-9a-fA-F]{64}$' }),
            sha512: str('The image file\'s sha512, pinned.', { pattern: '^[0-9a-fA-F]{128}$' }),
            checksums: str('The vendor\'s checksum file (SHA256SUMS, SHA512SUMS): a URL, or a name relative to the image URL\'s directory. Read only once a key in keys has verified it.', { pattern: '^[^\\s\'"`$]+$' }),
            signature: str('Detached OpenPGP signature of the checksum file (SHA512SUMS.sign, .gpg, .asc): a URL or a name relative to the image URL\'s directory. Left out, the checksum file must be clear-signed.', { pattern: '^[^\\s\'"`$]+$' }),
            checksum_name: str('The image\'s name in the checksum file, when it is not the URL\'s file name.'),
            keys: { ...strList('OpenPGP public key files (armored or binary, relative to kiln.yaml) whose signature on the checksum file is trusted.'), default: [] },
            verify: { type: 'boolean', default: true, description: 'Verify the image. false is an explicit, recorded opt-out.' },
            format: { enum: ['raw', 'qcow2', 'vmdk', 'vpc', 'vhdx', 'tar'], description: 'The format the file must be (checked against its own header; vpc is VHD). Left out, it is read from the file.' },
          },
        },
        debian: {
          type: 'object', additionalProperties: false, default: {}, description: 'Debian from the signed archive, via mmdebstrap.',
          properties: {
            suite: str('Debian suite: bookworm (Debian 12) or trixie (Debian 13), the two Kiln is tested with; any other is refused until it is. Omitted, it is bookworm, so that a newer Kiln never moves an image to another Debian release; new repositories (the examples) name trixie.', { default: 'bookworm', enum: ['bookworm', 'trixie'] }),
            mirror: str('Archive mirror URL: http:// or https://, host[:port] and path.', { default: 'http://deb.debian.org/debian', pattern: MIRROR_URL }),
            components: { ...names('Archive components.', COMPONENT), minItems: 1, default: ['main'] },
            kernel: str('Kernel package.', { default: 'linux-image-cloud-amd64', pattern: PACKAGE }),
            packages: { ...names('Extra packages in the base tree (before the playbook runs): Debian package names, optionally name=version.', PACKAGE), default: [] },
            keyring: str('OpenPGP keyring that signs the archive Release file.', { default: '/usr/share/keyrings/debian-archive-keyring.gpg' }),
            verify: { type: 'boolean', default: true, description: 'Verify the Release signature. false is an explicit, recorded opt-out.' },
            max_age: str('Oldest archive metadata an unlocked build (and `kiln lock`) accepts, by the signed Date of the InRelease: hours, days or weeks, e.g. 30d. An InRelease past its signed Valid-Until is always refused. Locked builds check the chain of the InRelease kept with kiln.lock, not its age.', { default: '365d', pattern: MAX_AGE_PATTERN }),
            snapshot: str('snapshot.debian.org-style mirror (same pool layout) that locked builds download from when the mirror no longer has a locked version, e.g. https://snapshot.debian.org/archive/debian/20250101T000000Z/.', { pattern: MIRROR_URL }),
          },
        },
      },
    },
    provision: {
      type: 'object', additionalProperties: false, description: 'The Ansible playbook applied to the image.',
      required: ['playbook'],
      properties: {
        playbook: str('Playbook path, relative to kiln.yaml.'),
        vars: { type: 'object', description: 'Extra variables (-e) for the playbook.', default: {} },
        idempotence: str('Run the playbook twice; what to do when the second run changes anything.', { enum: ['fail', 'warn', 'off'], default: 'fail' }),
        host_ports: {
          type: 'array', items: { type: 'integer', minimum: 1, maximum: 65535 }, uniqueItems: true, default: [],
          description: "TCP ports of the build host's loopback the playbook may reach at build time, as 127.0.0.1:PORT (a local apt repository, a package proxy). Kiln relays exactly these; nothing else of the host is reachable from the build sandbox.",
        },
        ansible: str('The Ansible controller: a tools tree Kiln builds from this Debian suite (trixie: ansible-core 2.19, bookworm: 2.14), or "host" for the build host\'s own ansible-playbook. It runs in the build sandbox either way.', { enum: ['trixie', 'bookworm', 'host'], default: 'trixie' }),
      },
    },
    seal: {
      type: 'object', additionalProperties: false, default: {}, description: 'Sealing: every operation is on unless disabled by name.',
      properties: {
        disable: { ...strList('Seal operations to skip (see `kiln seal --list`).'), default: [] },
        keep: { ...strList('Paths the playbook installs on purpose that sealing must leave alone (e.g. an authorized_keys).'), default: [] },
      },
    },
    audit: {
      type: 'object', additionalProperties: false, default: {}, description: 'The audit of the finished disk.',
      properties: {
        accept: {
          type: 'array', items: { type: 'string', pattern: '^[0-9a-f]{16}$' }, uniqueItems: true, default: [],
          description: 'Fingerprints of secret findings shipped on purpose (shown by `kiln audit` as [fingerprint …]); each accepts exactly that secret in that file.',
        },
      },
    },
    disk: {
      type: 'object', additionalProperties: false, default: {}, description: 'The raw GPT disk every format is written from.',
      properties: {
        size: str('Virtual disk size, e.g. 2GiB or 1536MiB.', { default: '2GiB', pattern: '^[0-9]+(MiB|GiB|M|G)$' }),
        firmware: { type: 'array', items: { enum: ['bios', 'uefi'] }, minItems: 1, default: ['bios', 'uefi'], description: 'Firmware the disk boots under.' },
        hostname: str('Hostname written into the image (RFC 1123).', { default: 'localhost', pattern: HOSTNAME, maxLength: 253 }),
        kernel_cmdline: str('Extra kernel command line.', { default: '' }),
      },
    },
    vm: {
      type: 'object', additionalProperties: false, default: {}, description: 'Virtual hardware for OVA descriptors and `kiln boot`.',
      properties: {
        cpus: { type: 'integer', minimum: 1, default: 2 },
        memory_mib: { type: 'integer', minimum: 256, default: 1024 },
      },
    },
    formats: {
      type: 'array', items: { enum: [...FORMATS] }, uniqueItems: true, default: ['raw', 'qcow2'],
      description: 'Artifacts to write from the raw disk.',
    },
    release: {
      type: 'object', additionalProperties: false, default: {}, description: 'Where releases go and how they are signed.',
      properties: {
        store: str('Release store: a directory (OCI image layout) or oci://host[:port]/repository.', { default: '.kiln/store' }),
        sign: {
          type: 'object', additionalProperties: false,
          properties: {
            ssh_key: str('SSH private key used to sign releases (or KILN_SIGNING_KEY).'),
            pgp_key: str('Armored OpenPGP private key used to sign releases.'),
          },
        },
        trust: {
          type: 'object', additionalProperties: false,
          properties: {
            require_signature: { type: 'boolean', default: false },
            keys: strList('Public keys (files) whose signatures are trusted.'),
          },
        },
        metadata_ttl: {
          type: 'string', pattern: '^[0-9]+[dh]?$',
          description: 'How long the signed metadata (channels, revocations, cloud ids) stays valid after each change: 90d (default), 36h; 0 never expires. `kiln refresh` extends it.',
        },
      },
    },
    apply: {
      type: 'object', additionalProperties: false, default: {}, description: 'How `kiln apply` upgrades running machines to a release (read from the release\'s own commit).',
      properties: {
        health: {
          type: 'object', additionalProperties: false, minProperties: 1,
          description: 'Checked on every host after each batch of `kiln apply` (after the playbook and the stamp): an HTTP request and/or a command, retried every interval until it passes or the timeout is spent. A host that fails it stops the rollout (see --max-failures). url, body and command are Ansible templates, evaluated per host (inventory variables, kiln_image_version).',
          properties: {
            http: {
              type: 'object', additionalProperties: false, required: ['url'],
              properties: {
                url: str('The URL to GET, e.g. http://127.0.0.1/healthz (on the host itself) or http://{{ ansible_host }}/ with from: controller. It starts with http:// or https:// as written: a template may follow the scheme, not replace it.', { pattern: '^https?://[^\\n]+$' }),
                status: {
                  // One type list rather than oneOf: a wrong value gets one error, not one per alternative.
                  type: ['integer', 'array'], minimum: 100, maximum: 599, items: { type: 'integer', minimum: 100, maximum: 599 }, minItems: 1,
                  default: 200, description: 'The HTTP status that passes, or a list of them. Redirects are not followed.',
                },
                body: str('A regular expression (Python\'s re.search) the response body must match, e.g. the version: "{{ kiln_image_version }}".'),
                from: { enum: ['host', 'controller'], default: 'host', description: 'host: the request is made on each host (127.0.0.1 is the host); controller: from the machine running kiln apply, without privileges.' },
                validate_certs: { type: 'boolean', default: true, description: 'Verify the TLS certificate of an https URL.' },
              },
            },
            command: str('A shell command run on each host as root; exit status 0 is healthy, e.g. systemctl is-active --quiet nginx.', { minLength: 1 }),
            timeout: str('How long a host may take to pass, e.g. 60s or 5m.', { pattern: '^[0-9]+[sm]$', default: '60s' }),
            interval: str('The time between two tries.', { pattern: '^[0-9]+[sm]$', default: '5s' }),
          },
        },
      },
    },
    publish: {
      type: 'object', additionalProperties: false, default: {}, description: 'Where `kiln publish` puts a release (clouds).',
      properties: {
        aws: {
          type: 'object', additionalProperties: false, required: ['regions'],
          description: 'An AMI per region: the raw disk uploaded as an EBS snapshot (EBS direct APIs), registered, copied to the other regions, tagged ImageVersion=<version>. Credentials: the AWS SDK\'s default chain.',
          properties: {
            regions: { type: 'array', items: { type: 'string', pattern: '^[a-z]{2}(-[a-z]+)+-[0-9]+$' }, minItems: 1, uniqueItems: true, description: 'The first region gets the upload, the others a CopyImage of it.' },
            boot_mode: { enum: ['uefi-preferred', 'uefi', 'legacy-bios'], description: 'Default: from the disk (BIOS + UEFI: uefi-preferred). uefi also turns NitroTPM (TPM 2.0) on.' },
            parallel: { type: 'integer', minimum: 1, maximum: 100, default: 16, description: 'PutSnapshotBlock requests in flight at once.' },
            wait: { type: 'string', pattern: '^[0-9]+[sm]$', default: '30m', description: 'The longest Kiln waits for a snapshot to complete or a copy to become available, e.g. 30m, 90s.' },
            on_build: { type: 'boolean', default: false, description: 'kiln build publishes the release as its last step.' },
          },
        },
        azure: {
          type: 'object', additionalProperties: false, required: ['subscription', 'resource_group', 'location', 'storage_account', 'gallery', 'publisher', 'sku', 'regions'],
          description: 'An Azure Compute Gallery image version: the fixed VHD uploaded as a page blob, the version x.y.z from the Kiln version, tags ImageVersion, digest and commit. Credentials: @azure/identity\'s DefaultAzureCredential (AZURE_STORAGE_CONNECTION_STRING for the blob, if set).',
          properties: {
            subscription: str('The subscription id.', { pattern: '^[0-9a-fA-F-]{36}$' }),
            resource_group: str('The resource group of the gallery.', { pattern: '^[-\\w._()]{1,90}$' }),
            location: str('The gallery\'s region, e.g. westeurope.', { pattern: '^[a-z0-9]+$' }),
            storage_account: str('The storage account the VHD is uploaded to (its name).', { pattern: '^[a-z0-9]{3,24}$' }),
            storage_resource_group: str('The storage account\'s resource group; default resource_group.', { pattern: '^[-\\w._()]{1,90}$' }),
            container: str('The blob container.', { default: 'kiln-images', pattern: '^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$' }),
            gallery: str('The Azure Compute Gallery.', { pattern: '^[A-Za-z0-9._]{1,80}$' }),
            image_definition: str('The gallery image definition; default the image name. Created when missing (Linux, generalized, Hyper-V V2 for UEFI disks, V1 otherwise).', { pattern: '^[A-Za-z0-9._-]{1,80}$' }),
            publisher: str('The image definition\'s identifier: publisher.'),
            offer: str('The image definition\'s identifier: offer; default the image name.'),
            sku: str('The image definition\'s identifier: SKU.'),
            regions: { type: 'array', items: { type: 'string', pattern: '^[a-z0-9]+$' }, minItems: 1, uniqueItems: true, description: 'The regions the version is replicated to.' },
            arm_endpoint: str('The Resource Manager endpoint, for sovereign clouds and Azure Stack; default https://management.azure.com.', { pattern: '^https://[^\\s]+$' }),
          },
        },
        gce: {
          type: 'object', additionalProperties: false, required: ['project', 'bucket'],
          description: 'A Compute Engine image: the gce tar.gz uploaded to a Cloud Storage bucket (resumable), then images.insert with the family, guest OS features and labels (the version as a label value; the exact version, digest and commit in the description). Credentials: Google application default credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud auth application-default login, or the metadata server).',
          properties: {
            project: str('The project the image is made in.', { pattern: '^[a-z][-a-z0-9]{4,28}[a-z0-9]$' }),
            bucket: str('The Cloud Storage bucket the tar.gz is uploaded to (in the same project or readable by Compute Engine\'s service agent).', { pattern: '^[a-z0-9][-a-z0-9_.]{1,220}[a-z0-9]$' }),
            object_prefix: str('Where in the bucket the upload goes.', { default: 'kiln/', pattern: '^[^\\s]{0,200}$' }),
            image_prefix: str('The image name is <image_prefix>-<version as a label>; default the image name.', { pattern: '^[a-z][-a-z0-9]{0,40}$' }),
            family: str('The image family; default the image name. `kiln resolve` and Terraform can also launch the family\'s newest image.', { pattern: '^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$' }),
            storage_locations: { type: 'array', items: { type: 'string', pattern: '^[a-z0-9-]+$' }, uniqueItems: true, maxItems: 1, description: 'Where the image is stored (one multi-region or region, e.g. eu); default the bucket\'s.' },
            guest_os_features: { type: 'array', items: { type: 'string', pattern: '^[A-Z0-9_]+$' }, uniqueItems: true, description: 'Guest OS features added to those Kiln sets from the disk (UEFI_COMPATIBLE for a disk with an ESP, VIRTIO_SCSI_MULTIQUEUE, GVNIC).' },
            keep_object: { type: 'boolean', default: false, description: 'Keep the tar.gz in the bucket once the image is made (Compute Engine no longer needs it).' },
            wait: { type: 'string', pattern: '^[0-9]+[sm]$', default: '30m', description: 'The longest Kiln waits for the image to be made.' },
            compute_endpoint: str('The Compute Engine API endpoint (Private Service Connect); default https://compute.googleapis.com.', { pattern: '^https://[^\\s/]+/?$' }),
            storage_endpoint: str('The Cloud Storage API endpoint (Private Service Connect); default https://storage.googleapis.com.', { pattern: '^https://[^\\s/]+/?$' }),
          },
        },
      },
    },
  },
} as const;

/** source.image: a vendor's disk image and how it is verified (src/source/image.ts). */
export interface ImageSourceConfig {
  url: string;
  /** For an ec2:// url: the account that must own the AMI. */
  owner?: string;
  sha256?: string;
  sha512?: string;
  /** URL of SHA256SUMS/SHA512SUMS, absolute or relative to url's directory. */
  checksums?: string;
  /** Detached signature of the checksum file (URL, absolute or relative to url's directory); absent: the file must be clear-signed. */
  signature?: string;
  /** The image's name in the checksum file, when it is not url's base name. */
  checksum_name?: string;
  /** Public key files (relative to kiln.yaml) whose signature on the checksum file is trusted. */
  keys: string[];
  verify: boolean;
  /** Expected disk format; checked against the file's own header. */
  format?: 'raw' | 'qcow2' | 'vmdk' | 'vpc' | 'vhdx' | 'tar';
}

export interface KilnConfig {
  name: string;
  description?: string;
  version: { tag_pattern: string };
  source: {
    image?: ImageSourceConfig;
    release?: { ref: string; store?: string; format?: 'raw' | 'qcow2' | 'vmdk' | 'vhd' | 'vhdx' };
    debian: {
      suite: string; mirror: string; components: string[]; kernel: string; packages: string[];
      keyring: string; verify: boolean; max_age: string; snapshot?: string;
    };
  };
  provision: { playbook: string; vars: Record<string, unknown>; idempotence: 'fail' | 'warn' | 'off'; host_ports: number[]; ansible: 'trixie' | 'bookworm' | 'host' };
  seal: { disable: string[]; keep: string[] };
  audit: { accept: string[] };
  disk: { size: string; firmware: ('bios' | 'uefi')[]; hostname: string; kernel_cmdline: string };
  vm: { cpus: number; memory_mib: number };
  formats: FormatName[];
  release: {
    store: string;
    sign?: { ssh_key?: string; pgp_key?: string };
    trust?: { require_signature?: boolean; keys?: string[] };
    metadata_ttl?: string;
  };
  apply: { health?: HealthConfig };
  publish: { aws?: AwsPublishConfig; azure?: AzurePublishConfig; gce?: GcePublishConfig };
}

/** publish.azure in kiln.yaml (src/cloud/azure/publish.ts). */
export interface AzurePublishConfig {
  subscription: string;
  resource_group: string;
  location: string;
  storage_account: string;
  storage_resource_group?: string;
  container: string;
  gallery: string;
  image_definition?: string;
  publisher: string;
  offer?: string;
  sku: string;
  regions: string[];
  /** The Resource Manager endpoint (sovereign clouds, Azure Stack); default https://management.azure.com. */
  arm_endpoint?: string;
}

/** publish.gce in kiln.yaml (src/cloud/gce/publish.ts). */
export interface GcePublishConfig {
  project: string;
  bucket: string;
  object_prefix: string;
  image_prefix?: string;
  family?: string;
  storage_locations?: string[];
  guest_os_features?: string[];
  keep_object: boolean;
  wait: string;
  /** Private Service Connect endpoints; default Google's. */
  compute_endpoint?: string;
  storage_endpoint?: string;
}

/** publish.aws (src/cloud/aws/publish.ts). */
export interface AwsPublishConfig { regions: string[]; boot_mode?: 'uefi-preferred' | 'uefi' | 'legacy-bios'; parallel: number; wait: string; on_build: boolean }

/** publish.aws.wait in seconds. */
export function waitSeconds(s: string): number {
  const m = /^([0-9]+)([sm])$/.exec(s);
  if (!m) throw new Error(`waitSeconds: expected digits and s or m, got ${JSON.stringify(s)}`);
  return Number(m[1]) * (m[2] === 'm' ? 60 : 1);
}

export function parseSize(s: string): number {
  const m = /^([0-9]+)(MiB|GiB|M|G)$/.exec(s);
  if (!m) throw new Error(`parseSize: expected digits and MiB, GiB, M or G, got ${JSON.stringify(s)}`);
  const n = Number(m[1]);
  return m[2].startsWith('G') ? n * 1024 ** 3 : n * 1024 ** 2;
}
