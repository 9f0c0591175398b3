/* REST calls to the gateway, with the bearer token and ErrorBody errors.
 *
 * The token (token auth mode) lives in localStorage so every tab shares it; a
 * 401 from any call tells the app to show the sign-in screen.
 */
import type {
  ApprovalList,
  ApprovalView,
  Decision,
  ErrorBody,
  ModeInfo,
  ProviderKeyInfo,
  ProviderKeyList,
  SessionCreate,
  SessionList,
  SessionView,
  TaskCreate,
  TaskView,
  UserSettings,
} from "./protocol";

const TOKEN_KEY = "cmbtask.token";

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly detail: unknown = null,
  ) {
    super(message);
  }
}

export interface Me {
  user: string;
  auth_mode: "none" | "token" | "proxy";
}

export interface SessionQuery {
  limit: number;
  offset: number;
  mode?: string;
  status?: string;
  q?: string;
}

let unauthorizedHandler: () => void = () => undefined;

export function onUnauthorized(handler: () => void): void {
  unauthorizedHandler = handler;
}

export function getToken(): string | null {
  return localStorage.getItem(TOKEN_KEY);
}

export function setToken(token: string | null): void {
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
}

/** ws(s):// URL of a gateway path, with the token as `?token=` (browsers cannot set headers). */
export function wsUrl(path: string, params: Record<string, string | number> = {}): string {
  const url = new URL(path, window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  for (const [key, value] of Object.entries(params)) url.searchParams.set(key, String(value));
  const token = getToken();
  if (token) url.searchParams.set("token", token);
  return url.toString();
}

function apiBase(): string {
  return new URL("/", window.location.href).toString();
}

function send(method: string, path: string, body?: unknown): Promise<Response> {
  const headers: Record<string, string> = { Accept: "application/json" };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  return fetch(new URL(path, apiBase()), {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

async function request<T>(method: string, path: string, body?: unknown): Promise<T> {
  const response = await send(method, path, body);
  if (response.status === 401) unauthorizedHandler();
  if (!response.ok) throw await toError(response);
  if (response.status === 204) return undefined as T;
  return (await response.json()) as T;
}

async function toError(response: Response): Promise<ApiError> {
  try {
    const body = (await response.json()) as Partial<ErrorBody> & { detail?: unknown };
    const message = body.message ?? (typeof body.detail === "string" ? body.detail : response.statusText);
    return new ApiError(response.status, body.code ?? String(response.status), message, body.detail ?? null);
  } catch {
    return new ApiError(response.status, String(response.status), response.statusText || "request failed");
  }
}

function query(params: object): string {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

const enc = encodeURIComponent;

/** A file from a task's work dir, fetched with the token (an <img src> could not send it). */
async function fileBlob(taskId: string, path: string): Promise<Blob> {
  const response = await send("GET", `/api/tasks/${enc(taskId)}/files/${path.split("/").map(enc).join("/")}`);
  if (response.status === 401) unauthorizedHandler();
  if (!response.ok) throw await toError(response);
  return response.blob();
}

export const api = {
  me: () => request<Me>("GET", "/api/me"),
  modes: () => request<ModeInfo[]>("GET", "/api/modes"),
  listSessions: (q: SessionQuery) => request<SessionList>("GET", `/api/sessions${query(q)}`),
  createSession: (body: SessionCreate) => request<SessionView>("POST", "/api/sessions", body),
  getSession: (id: string) => request<SessionView>("GET", `/api/sessions/${enc(id)}`),
  renameSession: (id: string, version: number, title: string) =>
    request<SessionView>("PATCH", `/api/sessions/${enc(id)}`, { version, title }),
  suspendSession: (id: string) => request<SessionView>("POST", `/api/sessions/${enc(id)}/suspend`),
  resumeSession: (id: string) => request<SessionView>("POST", `/api/sessions/${enc(id)}/resume`),
  deleteSession: (id: string) => request<void>("DELETE", `/api/sessions/${enc(id)}`),
  listTasks: (sessionId: string) => request<TaskView[]>("GET", `/api/sessions/${enc(sessionId)}/tasks`),
  submitTask: (sessionId: string, body: TaskCreate) =>
    request<TaskView>("POST", `/api/sessions/${enc(sessionId)}/tasks`, body),
  cancelTask: (taskId: string) => request<TaskView>("POST", `/api/tasks/${enc(taskId)}/cancel`),
  fileBlob,
  pendingApprovals: () => request<ApprovalList>("GET", "/api/approvals?status=pending"),
  resolveApproval: (id: string, decision: Decision, text: string | null) =>
    request<ApprovalView>("POST", `/api/approvals/${enc(id)}/resolve`, { decision, text }),
  // keys are write-only: no call returns one
  listKeys: () => request<ProviderKeyList>("GET", "/api/keys"),
  setKey: (provider: string, value: string) => request<ProviderKeyInfo>("PUT", `/api/keys/${enc(provider)}`, { value }),
  deleteKey: (provider: string) => request<void>("DELETE", `/api/keys/${enc(provider)}`),
  getSettings: () => request<UserSettings>("GET", "/api/settings"),
  putSettings: (body: UserSettings) => request<UserSettings>("PUT", "/api/settings", body),
};
