/**
 * Hangar's browser page: a token (from `#token=` or pasted), Uppy's dashboard with Hangar's uploader,
 * one card per upload that follows the image to `active` or `killed`, and the project's images.
 *
 * Stable hooks for automated tests: the file input `[data-testid=file-input]` (an `<input type=file>`),
 * and on each upload card (`[data-testid=upload]`, `data-image-id`, `data-file-name`):
 * `[data-testid=image-status]` (the image's status), `[data-testid=image-checksum]` (its md5) and
 * `[data-testid=inspection]` (the inspector's verdict, `data-verdict="ok|refused"`).
 */
import Uppy, { type Meta } from "@uppy/core";
import Dashboard from "@uppy/dashboard";
import GoldenRetriever from "@uppy/golden-retriever";
import { HangarApiError, HangarClient, type Image } from "../../client/lib/api.ts";
import type { InspectLimits, Verdict } from "./inspect.ts";
import {
  forgetToken as dropToken,
  identityOf,
  storedToken,
  storeToken,
  takeTokenFromFragment,
} from "./token.ts";
import { describeRefusal, forgetResume, HangarUpload, type UploadHooks } from "./uploader.ts";
import "./style.css";

const TERMINAL = new Set(["active", "killed", "deactivated", "deleted"]);
const POLL_MS = 1000;

const $ = <T extends HTMLElement = HTMLElement>(selector: string): T => {
  const el = document.querySelector<T>(selector);
  if (!el) throw new Error(`the page has no ${selector}`);
  return el;
};

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  text?: string,
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function bytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

/** The API's root: this page lives at `<api>/ui/`. */
function apiRoot(): string {
  return new URL("../", location.href).href.replace(/\/$/, "");
}

function showSignIn(message?: string): void {
  $("#sign-in").hidden = false;
  $("#app").hidden = true;
  $("#forget").hidden = true;
  $("#who").textContent = "No token yet";
  $("#token-error").textContent = message ?? "";
}

async function importLimits(api: string, token: string): Promise<InspectLimits> {
  const res = await fetch(`${api}/v2/info/import`, { headers: { "x-auth-token": token } });
  const body = (await res.json().catch(() => ({}))) as {
    hangar?: { max_virtual_size?: number; max_gzip_ratio?: number };
    error?: { message?: string; reason?: string };
  };
  if (!res.ok)
    throw new HangarApiError(res.status, body.error?.reason ?? "HTTP_ERROR", body.error?.message ?? "");
  return {
    maxVirtualSize: body.hangar?.max_virtual_size ?? 2 ** 40,
    maxGzipRatio: body.hangar?.max_gzip_ratio ?? 64,
  };
}

/** One card per file: inspection, image, progress of the import, final status and checksums. */
class UploadCards {
  private readonly cards = new Map<string, HTMLLIElement>();
  constructor(private readonly client: HangarClient) {}

  card(fileId: string, name: string): HTMLLIElement {
    let card = this.cards.get(fileId);
    if (!card) {
      card = el("li", {
        class: "card",
        "data-testid": "upload",
        "data-file-name": name,
        "data-state": "inspecting",
      });
      card.append(el("strong", {}, name), el("dl"));
      $("#uploads").prepend(card);
      $("#no-uploads").hidden = true;
      this.cards.set(fileId, card);
    }
    return card;
  }

  private dropField(card: HTMLElement, testid: string): void {
    const dd = card.querySelector(`dd[data-testid="${testid}"]`);
    dd?.previousElementSibling?.remove();
    dd?.remove();
  }

  private field(card: HTMLElement, label: string, testid: string, value: string, cls = ""): void {
    const dl = card.querySelector("dl") as HTMLDListElement;
    let dd = dl.querySelector<HTMLElement>(`[data-testid="${testid}"]`);
    if (!dd) {
      dl.append(el("dt", {}, label));
      dd = el("dd", { "data-testid": testid, ...(cls ? { class: cls } : {}) });
      dl.append(dd);
    }
    dd.textContent = value;
  }

  inspected(fileId: string, name: string, verdict: Verdict): void {
    const card = this.card(fileId, name);
    const text = verdict.ok
      ? `${verdict.result.format}${verdict.result.subformat ? ` (${verdict.result.subformat})` : ""}` +
        `${verdict.result.compression === "gzip" ? ", gzip" : ""}, virtual size ${bytes(verdict.result.virtualSize)};` +
        ` ${verdict.result.checks.length} checks passed, ${bytes(verdict.bytesRead)} read`
      : `refused — ${describeRefusal(verdict)}`;
    this.field(card, "inspection", "inspection", text);
    card
      .querySelector('[data-testid="inspection"]')
      ?.setAttribute("data-verdict", verdict.ok ? "ok" : "refused");
    if (!verdict.ok) {
      card.dataset.state = "refused";
      card.querySelector('[data-testid="inspection"]')?.setAttribute("data-check", verdict.check);
    }
  }

  imageKnown(fileId: string, image: Image, resumed: boolean): void {
    const card = this.card(fileId, image.name ?? image.id);
    card.dataset.imageId = image.id;
    this.field(card, "image", "image-id", `${image.id}${resumed ? " (resumed)" : ""}`);
    this.show(card, image);
  }

  uploaded(fileId: string, image: Image, parts: { sent: number[]; skipped: number[] }): void {
    const card = this.card(fileId, image.name ?? image.id);
    if (parts.sent.length + parts.skipped.length > 0) {
      this.field(
        card,
        "parts",
        "parts",
        `${parts.sent.length} sent${parts.skipped.length ? `, ${parts.skipped.length} already in storage` : ""}`,
      );
    }
    void this.follow(card, image.id);
  }

  failed(fileId: string, message: string): void {
    const card = this.cards.get(fileId);
    if (!card || card.dataset.state === "refused") return;
    card.dataset.state = "failed";
    this.field(card, "error", "upload-error", message);
  }

  private show(card: HTMLElement, image: Image): void {
    card.dataset.state = image.status;
    this.field(card, "status", "image-status", image.status, "status");
    const progress = image.import_progress as { bytes_read?: number; total?: number } | null | undefined;
    if (image.status === "importing" && progress && typeof progress === "object") {
      const done = progress.total
        ? ` (${Math.floor((100 * (progress.bytes_read ?? 0)) / progress.total)} %)`
        : "";
      this.field(
        card,
        "import",
        "import-progress",
        `${bytes(progress.bytes_read)} of ${bytes(progress.total)} read${done}`,
      );
    } else {
      this.dropField(card, "import-progress");
    }
    if (image.checksum) this.field(card, "md5", "image-checksum", image.checksum);
    if (image.os_hash_value)
      this.field(card, image.os_hash_algo ?? "hash", "image-hash", image.os_hash_value);
    if (image.failure)
      this.field(card, "failure", "image-failure", `${image.failure.reason}: ${image.failure.message}`);
  }

  /** Polls the image until it reaches a final status. */
  private async follow(card: HTMLElement, id: string): Promise<void> {
    for (;;) {
      let image: Image;
      try {
        image = await this.client.getImage(id);
      } catch (error) {
        this.field(card, "error", "upload-error", error instanceof Error ? error.message : String(error));
        return;
      }
      this.show(card, image);
      if (TERMINAL.has(image.status)) {
        window.dispatchEvent(new CustomEvent("hangar:image-final", { detail: image }));
        return;
      }
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  }
}

/** The project's images (not the public and shared ones of others the API also lists), with delete. */
class ImageTable {
  constructor(
    private readonly client: HangarClient,
    private readonly project: string | undefined,
  ) {}

  async refresh(): Promise<void> {
    const body = $("#images tbody");
    $("#images-error").textContent = "";
    let images: Image[];
    try {
      images = (await this.client.listImages()).filter((i) => !this.project || i.owner === this.project);
    } catch (error) {
      $("#images-error").textContent = error instanceof Error ? error.message : String(error);
      return;
    }
    body.replaceChildren(
      ...images.map((image) => {
        const row = el("tr", { "data-image-id": image.id });
        const del = el("button", { type: "button", class: "delete" }, "Delete");
        del.addEventListener("click", () => void this.remove(image));
        const created =
          typeof image.created_at === "string" ? image.created_at.replace("T", " ").replace(/Z$/, "") : "";
        row.append(
          el("td", { title: image.id }, image.name ?? image.id),
          el("td", { class: "status" }, image.status),
          el("td", {}, image.disk_format ?? "—"),
          el("td", {}, bytes(image.size)),
          el("td", { class: "mono" }, image.checksum ?? "—"),
          el("td", {}, created),
          el("td", {}, ""),
        );
        row.lastElementChild?.append(del);
        return row;
      }),
    );
    if (images.length === 0) {
      const row = el("tr");
      row.append(el("td", { colspan: "7", class: "hint" }, "No images yet."));
      body.append(row);
    }
  }

  private async remove(image: Image): Promise<void> {
    if (!confirm(`Delete image ${image.name ?? image.id}?`)) return;
    try {
      await this.client.deleteImage(image.id);
    } catch (error) {
      $("#images-error").textContent = error instanceof Error ? error.message : String(error);
    }
    await this.refresh();
  }
}

async function start(token: string): Promise<void> {
  const api = apiRoot();
  let limits: InspectLimits;
  try {
    limits = await importLimits(api, token);
  } catch (error) {
    dropToken();
    const message = error instanceof Error ? error.message : String(error);
    showSignIn(`The API refused this token: ${message}`);
    return;
  }
  const who = identityOf(token);
  $("#who").textContent = who
    ? `${who.user} in project ${who.project}${who.roles.length ? ` (${who.roles.join(", ")})` : ""}`
    : "token accepted (not a JWT the page can read)";
  $("#project-name").textContent = who ? `project ${who.project}` : "the project";
  $("#sign-in").hidden = true;
  $("#app").hidden = false;
  $("#forget").hidden = false;

  const client = new HangarClient(api, token, (input, init) => fetch(input, init));
  const cards = new UploadCards(client);
  const table = new ImageTable(client, who?.project);
  const hooks: UploadHooks = {
    inspected: (id, name, verdict) => cards.inspected(id, name, verdict),
    imageKnown: (id, image, resumed) => {
      cards.imageKnown(id, image, resumed);
      void table.refresh();
    },
    uploaded: (id, image, parts) => cards.uploaded(id, image, parts),
    failed: (id, message) => cards.failed(id, message),
  };
  window.addEventListener("hangar:image-final", () => void table.refresh());

  const uppy = new Uppy<Meta, Record<string, never>>({ id: "hangar", autoProceed: true })
    .use(Dashboard, {
      inline: true,
      target: "#dashboard",
      height: 300,
      width: "100%",
      proudlyDisplayPoweredByUppy: false,
      disableThumbnailGenerator: true,
      note: "Disk images: raw, qcow2, vmdk, vhd, vhdx, vdi, iso (gzip-compressed too)",
    })
    .use(GoldenRetriever)
    .use(HangarUpload, {
      client,
      limits: () => limits,
      diskFormat: () => $<HTMLSelectElement>("#disk-format").value || undefined,
      fields: () => ({ visibility: $<HTMLSelectElement>("#visibility").value }),
      hooks,
    });
  uppy.on("upload-success", (file) => {
    if (file?.data instanceof File) forgetResume(file.data);
  });
  // A file re-added after a reload fills the ghost Golden Retriever kept: once none is left, carry on.
  uppy.on("files-added", () => {
    const { recoveredState } = uppy.getState();
    if (recoveredState && !uppy.getFiles().some((f) => f.isGhost)) uppy.emit("restore-confirmed");
  });

  const input = $<HTMLInputElement>("#file-input");
  input.addEventListener("change", () => {
    for (const file of Array.from(input.files ?? [])) {
      try {
        uppy.addFile({
          name: file.name,
          type: file.type || "application/octet-stream",
          data: file,
          source: "file-input",
        });
      } catch (error) {
        uppy.info(error instanceof Error ? error.message : String(error), "error", 5000);
      }
    }
    input.value = "";
  });
  $("#refresh").addEventListener("click", () => void table.refresh());
  await table.refresh();
}

function boot(): void {
  takeTokenFromFragment();
  $("#token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const value = $<HTMLTextAreaElement>("#token-input").value.trim();
    if (!value) return;
    storeToken(value);
    $<HTMLTextAreaElement>("#token-input").value = "";
    void start(value);
  });
  $("#forget").addEventListener("click", () => {
    dropToken();
    location.reload();
  });
  const token = storedToken();
  if (token) void start(token);
  else showSignIn();
}

boot();
