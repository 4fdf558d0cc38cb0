// api wires the generated stubs to a grpc-web transport on the page's own
// origin, with the access token on every call but AuthService's.
import { createClient, ConnectError, Code, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { AuthService } from "../../../gen/ts/parley/v1/auth_pb";
import { ChatService } from "../../../gen/ts/parley/v1/chat_pb";
import { ConversationService } from "../../../gen/ts/parley/v1/conversation_pb";
import { AttachmentService } from "../../../gen/ts/parley/v1/attachment_pb";

export { Code, ConnectError };

export function makeClients(baseUrl: string, token: () => string | undefined) {
  const auth: Interceptor = (next) => async (req) => {
    const t = token();
    if (t) req.header.set("authorization", `Bearer ${t}`);
    return next(req);
  };
  const transport = createGrpcWebTransport({ baseUrl, interceptors: [auth] });
  return {
    auth: createClient(AuthService, transport),
    chat: createClient(ChatService, transport),
    conversations: createClient(ConversationService, transport),
    attachments: createClient(AttachmentService, transport),
  };
}

export type Clients = ReturnType<typeof makeClients>;

export function ms(t: Timestamp | undefined): number {
  return t ? timestampDate(t).getTime() : 0;
}

/** codeOf returns the gRPC code of an error, Unknown for anything else. */
export function codeOf(err: unknown): Code {
  return err instanceof ConnectError ? err.code : Code.Unknown;
}

/** isNetwork tells an unreachable server from an answer. */
export function isNetwork(err: unknown): boolean {
  if (!(err instanceof ConnectError)) return err instanceof TypeError;
  if (err.code === Code.Unavailable) return true;
  // fetch failures surface as Unknown/Internal with the browser's message.
  return (err.code === Code.Unknown || err.code === Code.Internal) && /fetch|network|load failed/i.test(err.rawMessage);
}

/**
 * attemptError words what logging in, registering and confirming a password
 * share: an unreachable server and too many attempts. Anything else is the
 * caller's to word (undefined).
 */
export function attemptError(err: unknown): string | undefined {
  if (isNetwork(err)) return "Can't reach the server. Check your connection and try again.";
  if (codeOf(err) === Code.ResourceExhausted) return "Too many attempts. Wait a moment and try again.";
  return undefined;
}

/** explain turns an error into a sentence a person can act on. */
export function explain(err: unknown, what: string): string {
  if (isNetwork(err)) return `Can't reach the Parley server. Check your connection; ${what} will work again once it's back.`;
  if (err instanceof ConnectError) {
    const msg = humane(err.rawMessage);
    switch (err.code) {
      case Code.Unauthenticated:
        return "Your session has expired. Please log in again.";
      case Code.PermissionDenied:
        return msg || "You don't have access to that.";
      case Code.NotFound:
        return msg || "Not found.";
      case Code.AlreadyExists:
        return msg || "That already exists.";
      case Code.ResourceExhausted:
        return msg || "The server is busy. Try again in a moment.";
      case Code.Unimplemented:
        return `This server doesn't support ${what} yet.`;
      case Code.DeadlineExceeded:
        return `The server took too long to answer; ${what} may not have happened. Try again.`;
      default:
        return msg || `Something went wrong with ${what}.`;
    }
  }
  return `Something went wrong with ${what}: ${String(err)}`;
}

const CODE_PREFIX = /^(canceled|unknown|invalid argument|invalid_argument|deadline exceeded|not found|already exists|permission denied|resource exhausted|failed precondition|aborted|out of range|unimplemented|internal|unavailable|data loss|unauthenticated): /i;

/** humane strips the status-code prefix a server may put before its message. */
export function humane(message: string): string {
  const m = message.replace(CODE_PREFIX, "");
  return m ? m[0].toUpperCase() + m.slice(1) : m;
}

/** tooLarge says a file is over the server's limit in a person's terms. */
export function tooLarge(names: string, message: string, fmt: (n: number) => string): string {
  const m = /(\d+) bytes.*?limit is (\d+)/.exec(message);
  if (m) return `${names} is too large to send (${fmt(Number(m[1]))}; the limit is ${fmt(Number(m[2]))}).`;
  return `${names} is too large to send. ${humane(message)}`.trim();
}
