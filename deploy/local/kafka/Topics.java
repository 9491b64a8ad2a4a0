// Creates the topics of deploy/local/kafka/topics.txt that do not exist yet, in one JVM and one
// admin request (the Kafka CLI takes a JVM start per topic: 15 s for the list). Run by
// deploy/local/stack.sh as a single-file source program on the broker's own jars:
//   java -cp '.local/kafka/libs/*' Topics.java <bootstrap> <topics.txt> <timeout-seconds>
// Waits (bounded) until the broker answers, prints how many topics it created, exits non-zero
// on any failure.
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.common.errors.TopicExistsException;

public class Topics {
  public static void main(String[] args) throws Exception {
    String bootstrap = args[0];
    Path file = Path.of(args[1]);
    long deadline = System.currentTimeMillis() + Long.parseLong(args[2]) * 1000;
    List<NewTopic> wanted = new ArrayList<>();
    for (String raw : Files.readAllLines(file)) {
      String line = raw.split("#", 2)[0].trim();
      if (line.isEmpty()) continue;
      String[] parts = line.split("\\s+");
      if (parts.length != 2 || !parts[1].matches("[0-9]+")) {
        throw new IllegalArgumentException(file + ": bad line '" + raw + "' (want: <name> <partitions>)");
      }
      wanted.add(new NewTopic(parts[0], Integer.parseInt(parts[1]), (short) 1));
    }
    Properties props = new Properties();
    props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, 5000);
    props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 8000);
    try (Admin admin = Admin.create(props)) {
      Set<String> existing = null;
      while (existing == null) {
        try {
          existing = admin.listTopics().names().get();
        } catch (ExecutionException e) {
          if (System.currentTimeMillis() > deadline) throw e;
          Thread.sleep(300);
        }
      }
      List<NewTopic> missing = new ArrayList<>();
      for (NewTopic topic : wanted) if (!existing.contains(topic.name())) missing.add(topic);
      int created = 0;
      var results = admin.createTopics(missing).values();
      for (var entry : results.entrySet()) {
        try {
          entry.getValue().get();
          created++;
        } catch (ExecutionException e) {
          if (!(e.getCause() instanceof TopicExistsException)) {
            throw new IllegalStateException("could not create topic " + entry.getKey() + ": " + e.getCause(), e);
          }
        }
      }
      System.out.println(created);
    }
  }
}
