// Prints each certificate's subject as Eclipse Hono computes a device's auth-id:
// X509Certificate.getSubjectX500Principal().getName(X500Principal.RFC2253).
// Usage: java tests/java/Rfc2253.java CERT.der... (single-file source launch, JDK 11+).
import java.io.FileInputStream;
import java.security.cert.CertificateFactory;
import java.security.cert.X509Certificate;
import javax.security.auth.x500.X500Principal;

public class Rfc2253 {
    public static void main(String[] args) throws Exception {
        CertificateFactory cf = CertificateFactory.getInstance("X.509");
        for (String path : args) {
            try (FileInputStream in = new FileInputStream(path)) {
                X509Certificate c = (X509Certificate) cf.generateCertificate(in);
                System.out.println(c.getSubjectX500Principal().getName(X500Principal.RFC2253));
            }
        }
    }
}
