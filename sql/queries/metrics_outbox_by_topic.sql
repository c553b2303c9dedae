SELECT topic, count(*) AS backlog,
       extract(epoch FROM now() - min(created_at))::float8 AS oldest
  FROM outbox
 GROUP BY topic
