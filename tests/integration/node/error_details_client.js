// A Node.js client of PoetService built from the repository's protos alone
// (proto/ and third_party/, nothing installed with Python). It makes one call
// that is expected to fail and prints, as JSON, the google.rpc.Status read from
// the grpc-status-details-bin trailer, every detail decoded by its type URL.
//
//   node error_details_client.js HOST:PORT METHOD REQUEST_JSON

'use strict';

const fs = require('node:fs');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const ROOT = path.resolve(__dirname, '..', '..', '..');
const INCLUDE_DIRS = [path.join(ROOT, 'proto'), path.join(ROOT, 'third_party')];

// Only the include dirs: a missing file must fail here, not be found elsewhere.
// (protobufjs bundles the google/protobuf well-known types, as every runtime does.)
function resolveInRepository(origin, target) {
  if (path.isAbsolute(target)) return target;
  const found = INCLUDE_DIRS.map((dir) => path.join(dir, target)).find((file) => fs.existsSync(file));
  if (!found) throw new Error(`${target} is not in ${INCLUDE_DIRS.join(' or ')}`);
  return found;
}

function errorTypes() {
  const root = new protobuf.Root();
  root.resolvePath = resolveInRepository;
  root.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto'], { keepCase: true });
  return root;
}

function decodeStatus(types, bytes) {
  const asObject = (type, message) => type.toObject(message, { longs: String, enums: String, bytes: String });
  const Status = types.lookupType('google.rpc.Status');
  const status = Status.decode(bytes);
  return {
    code: status.code,
    message: status.message,
    details: status.details.map((any) => {
      const name = any.type_url.slice(any.type_url.lastIndexOf('/') + 1);
      const type = types.lookupType(name); // throws on a type the protos do not define
      return { '@type': any.type_url, ...asObject(type, type.decode(any.value)) };
    }),
  };
}

function main() {
  const [address, method, requestJson] = process.argv.slice(2);
  const types = errorTypes();
  const definition = protoLoader.loadSync('poet/v1/poet_service.proto', {
    includeDirs: INCLUDE_DIRS, keepCase: true, longs: String, enums: String, oneofs: true,
  });
  const { PoetService } = grpc.loadPackageDefinition(definition).poet.v1;
  const client = new PoetService(address, grpc.credentials.createInsecure());
  const deadline = new Date(Date.now() + 30000);
  client[method](JSON.parse(requestJson), { deadline }, (error, response) => {
    client.close();
    if (!error) {
      console.error(`${method} succeeded: ${JSON.stringify(response)}`);
      process.exit(1);
    }
    const [bytes] = error.metadata.get('grpc-status-details-bin');
    if (!bytes) {
      console.error(`${method} failed without grpc-status-details-bin: ${error.code} ${error.details}`);
      process.exit(1);
    }
    const status = decodeStatus(types, bytes);
    if (status.code !== error.code) {
      console.error(`status code ${status.code} differs from the call's ${error.code}`);
      process.exit(1);
    }
    console.log(JSON.stringify(status));
  });
}

main();
