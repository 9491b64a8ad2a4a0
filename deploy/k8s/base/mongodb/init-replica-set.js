// Brings the MongoDB replica set to its declared shape; safe to run any number of times.
// Run by the mongodb-init Job as `mongosh --nodb --quiet init-replica-set.js`.
//   1. waits until every member answers a ping;
//   2. initiates the set with the first member only (the others may hold the root user that
//      the image's entrypoint created, and joining by reconfig makes them resync cleanly);
//   3. adds each missing member, one per reconfig as MongoDB requires;
//   4. creates the application user, or resets its password and roles (rotation).
const env = process.env;
const members = env.MONGO_HOSTS.split(",").map((h) => h.trim()).filter((h) => h);
const replicaSet = env.MONGO_REPLICA_SET;
const appDatabase = env.MONGO_APP_DATABASE;
const deadline = Date.now() + Number(env.MONGO_INIT_TIMEOUT_S || "600") * 1000;
const credentials =
  encodeURIComponent(env.MONGO_ROOT_USERNAME) + ":" + encodeURIComponent(env.MONGO_ROOT_PASSWORD);

function retry(what, action) {
  for (;;) {
    try {
      return action();
    } catch (error) {
      if (Date.now() > deadline) {
        throw new Error(`${what}: gave up: ${error.message}`);
      }
      print(`${what}: ${error.message}; retrying in 2 s`);
      sleep(2000);
    }
  }
}

function check(reply, what) {
  if (!reply.ok) {
    throw new Error(`${what}: ${reply.codeName || ""} ${reply.errmsg || JSON.stringify(reply)}`);
  }
  return reply;
}

for (const host of members) {
  retry(`ping ${host}`, () =>
    check(new Mongo(`mongodb://${host}/?directConnection=true`).getDB("admin").runCommand({ ping: 1 }), "ping"));
}

const first = retry(`connect ${members[0]}`, () =>
  new Mongo(`mongodb://${credentials}@${members[0]}/?directConnection=true&authSource=admin`).getDB("admin"));
const status = first.runCommand({ replSetGetStatus: 1 });
if (!status.ok && status.codeName === "NotYetInitialized") {
  print(`initiating replica set ${replicaSet} with ${members[0]}`);
  check(first.runCommand({ replSetInitiate: { _id: replicaSet, members: [{ _id: 0, host: members[0] }] } }), "initiate");
} else {
  check(status, "replSetGetStatus");
}

const setUri = `mongodb://${credentials}@${members.join(",")}/?replicaSet=${replicaSet}&authSource=admin`;
const admin = retry("find the primary", () => {
  const db = new Mongo(setUri).getDB("admin");
  if (!check(db.runCommand({ hello: 1 }), "hello").isWritablePrimary) {
    throw new Error("no writable primary yet");
  }
  return db;
});

for (const host of members) {
  retry(`add ${host}`, () => {
    const config = check(admin.runCommand({ replSetGetConfig: 1 }), "replSetGetConfig").config;
    if (config.members.some((member) => member.host === host)) {
      return;
    }
    print(`adding ${host} to ${replicaSet}`);
    config.members.push({ _id: Math.max(...config.members.map((m) => m._id)) + 1, host: host });
    config.version += 1;
    check(admin.runCommand({ replSetReconfig: config }), "replSetReconfig");
  });
}

const app = admin.getSiblingDB(appDatabase);
const roles = [{ role: "readWrite", db: appDatabase }];
retry("application user", () => {
  if (app.getUser(env.MONGO_APP_USERNAME)) {
    app.updateUser(env.MONGO_APP_USERNAME, { pwd: env.MONGO_APP_PASSWORD, roles: roles });
    print(`updated user ${env.MONGO_APP_USERNAME}`);
  } else {
    app.createUser({ user: env.MONGO_APP_USERNAME, pwd: env.MONGO_APP_PASSWORD, roles: roles });
    print(`created user ${env.MONGO_APP_USERNAME}`);
  }
});
print(`replica set ${replicaSet} ready: ${members.join(", ")}`);
